"""The installed commands exist and answer --help: kiosk, central, vet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize(("command", "words"), [
    ("kiosk", ["run", "status", "check-audio", "--config"]),
    ("central", ["init", "serve"]),
    ("vet", ["vetting tool"]),
])
def test_command_answers_help(command: str, words: list[str]) -> None:
    done = subprocess.run([str(BIN / command), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    for word in words:
        assert word in done.stdout
