"""The README's first command (deploy/demo.py after setup): the service, then, with no
display, a whole defender session per language under Xvfb with a virtual microphone,
screenshots of every screen, and each sealed manifest opened with the demo team key.

The demo runs from a copy of the checkout that has no ``.venv`` (as in CI or any
checkout whose environment lives elsewhere), so it must start the service and the
kiosk with the interpreter it was started with. Then a take is sealed with the demo
kiosk's own config, as the kiosk seals one, and its header is read: the demo must
seal to post-quantum keys only, and its team key must open what it sealed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kiosk import config as kiosk_config
from kiosk.audio.recorder import Recorder
from kiosk.vault.custody import SessionCustody
from kiosk.vault.store import Store
from sync.envelope import open_bytes, open_sealed, parse_identity_file
from sync.envelope.header import read_header
from tests.audio_fakes import RATE, FakeStreams, record, tone
from tests.harness.kiosk_app import png_pixels

REPO = Path(__file__).resolve().parent.parent
#: What the demo needs of a checkout; everything else (.venv above all) is left out.
CHECKOUT = ["kiosk", "sync", "assets", "tests", "pyproject.toml", "README.md"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run the demo once; returns its data directory and what it printed."""
    tmp_path = tmp_path_factory.mktemp("demo")
    checkout = tmp_path / "checkout"
    (checkout / "deploy").mkdir(parents=True)
    for name in CHECKOUT:
        (checkout / name).symlink_to(REPO / name)
    # A real file, not a link: demo.py finds its checkout from its own resolved path.
    shutil.copy2(REPO / "deploy" / "demo.py", checkout / "deploy" / "demo.py")
    assert not (checkout / ".venv").exists()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    shots = tmp_path / "shots"
    data = tmp_path / "demo-data"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "KIOSK_CONFIG")}
    done = subprocess.run([sys.executable, str(checkout / "deploy" / "demo.py"), "--data",
                           str(data), "--port", str(port), "--screenshots", str(shots)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"central service answering at http://127.0.0.1:{port}" in done.stdout
    assert "no display is set" in done.stdout
    for language in ("en", "ar"):
        assert f"walkthrough ({language}): submitted" in done.stdout
        assert f"screenshots of every screen ({language}) saved in {shots / language}" \
            in done.stdout
        pngs = sorted((shots / language).glob("*.png"))
        names = {p.stem.split("-", 1)[1] for p in pngs}
        assert {"attract", "language", "who", "safety", "consent", "identity", "questions",
                "recording", "review", "receipt"} <= names
        for png in pngs:
            assert len(np.unique(png_pixels(png).reshape(-1, 3), axis=0)) > 50, png
    assert "visitor walkthrough (en): played story demo-" in done.stdout
    visitor = {p.stem.split("-", 1)[1] for p in (shots / "visitor").glob("*.png")}
    assert {"stories", "story", "playing", "ended"} <= visitor
    return data, done.stdout


def test_the_demo_prints_each_manifest_as_the_vetting_team_sees_it(
        demo: tuple[Path, str]) -> None:
    _, stdout = demo
    printed = [json.loads(block.split("\n}\n", 1)[0] + "\n}")
               for block in stdout.split(":\n{\n")[1:] for block in ["{\n" + block]]
    assert [m["language"] for m in printed] == ["en", "ar"]
    for manifest in printed:
        assert manifest["display_name"] == "Anonymous" and manifest["walkthrough"] is True
        assert manifest["consent"]["publish_voice"] is True
        assert [a["skipped"] for a in manifest["answers"]][:2] == [False, False]
        assert len(manifest["parts"]) == 2


def test_demo_starts_service_and_kiosk_without_a_venv_in_the_checkout(
        demo: tuple[Path, str]) -> None:
    data, _ = demo
    assert (data / "central").is_dir()
    assert (data / "kiosk").is_dir()  # the kiosk ran with the demo config's data_dir


def test_the_demo_config_names_post_quantum_keys_kept_private(demo: tuple[Path, str]) -> None:
    data, _ = demo
    config = tomllib.loads((data / "kiosk.toml").read_text())
    assert len(config["recipients"]) == 2
    assert all(r.startswith("age1pq1") for r in config["recipients"])
    team_key = data / "team" / "vetting-team.key"
    assert team_key.stat().st_mode & 0o077 == 0
    (identity,) = parse_identity_file(team_key.read_text())
    assert str(identity.recipient()) in config["recipients"]


def _stanza_types(path: Path) -> list[str]:
    with open(path, "rb") as f:
        header, _ = read_header(f)
    return [stanza.type for stanza in header.stanzas]


def test_what_the_demo_kiosk_seals_is_post_quantum_and_opens_with_the_team_key(
        demo: tuple[Path, str]) -> None:
    data, _ = demo
    cfg = kiosk_config.load(data / "kiosk.toml")
    assert len(cfg.recipients) == 2
    # As the kiosk seals an answer: its config's recipients, through the session's
    # custody, the recorder and the streaming envelope writer.
    store = Store.in_data_dir(cfg.data_dir)
    recorder = Recorder.from_config(cfg, streams=FakeStreams([tone(1.0)]))
    try:
        session = SessionCustody(data_dir=cfg.data_dir, store=store, recipients=cfg.recipients)
        name, take = record(session, recorder, "q1")
        deadline = time.monotonic() + 10
        while take.meters().elapsed_s * RATE < RATE:
            assert time.monotonic() < deadline, "the fake microphone did not deliver"
            time.sleep(0.01)
        result = take.stop()
        manifest = session.submit({"display_name": "Anonymous", "language": "en"})
    finally:
        recorder.close()
        store.close()
    part = session.directory / f"{name}.age"
    assert result.kept and part.is_file()

    for path in (part, manifest):
        types = _stanza_types(path)
        # One hybrid stanza per recipient, and no classic X25519 stanza beside them.
        assert types == ["mlkem768x25519"] * len(cfg.recipients), (path.name, types)
        assert "X25519" not in types

    team = parse_identity_file((data / "team" / "vetting-team.key").read_text())
    with open_sealed(part, identities=team) as f:
        samples, rate = sf.read(io.BytesIO(f.read()), dtype="int16")
    assert rate == RATE and len(samples) == result.frames >= RATE
    assert json.loads(open_bytes(manifest.read_bytes(), team))["parts"][0]["name"] == name
    escrow = parse_identity_file((data / "team" / "escrow.key").read_text())
    assert json.loads(open_bytes(manifest.read_bytes(), escrow))["display_name"] == "Anonymous"
