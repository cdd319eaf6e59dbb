"""The harness cleans up after itself: no daemon and no temporary directory left."""

from __future__ import annotations

import subprocess

from tests.harness.display import VirtualDisplay
from tests.harness.pulse import VirtualAudio, process_alive


def test_virtual_audio_stops_its_daemon_and_removes_its_directory() -> None:
    audio = VirtualAudio()
    audio.start()
    pid = int((audio.runtime / "pid").read_text())
    sinks = subprocess.run(["pactl", "list", "short", "sinks"], env=audio.full_env(),
                           capture_output=True, text=True, check=True).stdout
    assert "mic" in sinks and "speakers" in sinks
    audio.stop()
    assert not process_alive(pid)
    assert not audio.dir.exists()


def test_virtual_display_stops() -> None:
    display = VirtualDisplay()
    assert display.start().startswith(":")
    proc = display._proc
    assert proc is not None
    display.stop()
    assert proc.poll() is not None
