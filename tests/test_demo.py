"""The README's first command (deploy/demo.py after setup): service, kiosk, screenshot."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np

from sync.envelope import parse_identity_file
from tests.harness.kiosk_app import png_pixels

REPO = Path(__file__).resolve().parent.parent


def test_demo_starts_service_and_kiosk_and_saves_the_attract_screen(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    shot = tmp_path / "demo.png"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "KIOSK_CONFIG")}
    done = subprocess.run([sys.executable, str(REPO / "deploy" / "demo.py"), "--data",
                           str(tmp_path / "demo-data"), "--port", str(port), "--screenshot",
                           str(shot)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"central service answering at http://127.0.0.1:{port}" in done.stdout
    assert "no display is set" in done.stdout
    assert f"screenshot of the attract screen saved to {shot}" in done.stdout
    pixels = png_pixels(shot)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50

    # The demo kiosk seals to post-quantum keys, and its team keys are private files.
    config = tomllib.loads((tmp_path / "demo-data" / "kiosk.toml").read_text())
    assert len(config["recipients"]) == 2
    assert all(r.startswith("age1pq1") for r in config["recipients"])
    team_key = tmp_path / "demo-data" / "team" / "vetting-team.key"
    assert team_key.stat().st_mode & 0o077 == 0
    (identity,) = parse_identity_file(team_key.read_text())
    assert str(identity.recipient()) in config["recipients"]
