"""Start the real kiosk app on the test display and drive it through its test driver."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


class AppDriverError(Exception):
    pass


class KioskProcess:
    """The ``kiosk run`` process, with ``tap``, ``text``, ``screen`` and ``screenshot``."""

    def __init__(self, *, config: Path, workdir: Path, env: dict[str, str],
                 screenshot_dir: Path) -> None:
        self.socket_path = workdir / "driver.sock"
        self.screenshot_dir = screenshot_dir
        self.log = workdir / "kiosk.stderr"
        self._stderr = self.log.open("wb")
        full_env = {**env, "KIOSK_TEST_DRIVER": str(self.socket_path),
                    "KIVY_HOME": str(workdir / "kivy")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kiosk", "--config", str(config), "run"],
            env=full_env, cwd=workdir, stdout=self._stderr, stderr=subprocess.STDOUT)
        self._sock: socket.socket | None = None
        self._stream: Any = None
        self._connect()

    def _connect(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AppDriverError(f"kiosk exited with {self.proc.returncode}:"
                                     f" {self.log.read_text(errors='replace')[-2000:]}")
            if self.socket_path.exists():
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(self.socket_path))
                except OSError:
                    sock.close()
                else:
                    self._sock = sock
                    self._stream = sock.makefile("rwb")
                    return
            time.sleep(0.1)
        raise AppDriverError("the kiosk did not open its test driver in time")

    def call(self, cmd: str, **args: Any) -> Any:
        self._stream.write(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
        self._stream.flush()
        line = self._stream.readline()
        if not line:
            raise AppDriverError("the kiosk closed the driver connection")
        reply = json.loads(line)
        if "error" in reply:
            raise AppDriverError(reply["error"])
        return reply["result"]

    def screen(self) -> str:
        return self.call("screen")

    def ids(self) -> list[str]:
        return self.call("ids")

    def text(self, widget_id: str) -> str:
        return self.call("text", id=widget_id)

    def tap(self, widget_id: str) -> None:
        self.call("tap", id=widget_id)

    def wait_for_screen(self, name: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (current := self.screen()) != name:
            if time.monotonic() > deadline:
                raise AppDriverError(f"screen is {current!r}, expected {name!r}")
            time.sleep(0.1)

    def screenshot(self, name: str) -> Path:
        path = self.screenshot_dir / f"{name}.png"
        return Path(self.call("screenshot", path=str(path)))

    def close(self) -> None:
        try:
            if self.proc.poll() is None and self._stream is not None:
                self.call("quit")
                self.proc.wait(10)
        except (AppDriverError, OSError, subprocess.TimeoutExpired):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self._sock is not None:
                self._sock.close()
            self._stderr.close()


def png_pixels(path: Path) -> np.ndarray:
    """The RGB pixels of a PNG, for checks such as "this screenshot is not blank"."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
