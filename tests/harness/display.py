"""A private Xvfb display for the test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SCREEN = "1280x800x24"


class VirtualDisplay:
    def __init__(self) -> None:
        self.display = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        if shutil.which("Xvfb") is None:
            raise RuntimeError("Xvfb is missing: run deploy/setup.sh")
        read_fd, write_fd = os.pipe()
        # -displayfd: Xvfb picks a free display number and writes it when ready.
        self._proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", SCREEN, "-nolisten", "tcp"],
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            self.stop()
            raise RuntimeError("Xvfb did not start")
        self.display = f":{number}"
        return self.display

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None


def tmp_kivy_home() -> Path:
    return Path(tempfile.mkdtemp(prefix="kiosk-kivy-"))
