"""The README's first command (deploy/demo.py after setup): the service, the vetting
team's keys, then, with no display, a whole defender session per language under Xvfb
with a virtual microphone, screenshots of every screen, the sync to the vetting queue,
``vet pull`` and ``vet show`` (each manifest as the team sees it), ``vet publish``, the
kiosk's catalog sync, and a visitor playing the story just published.

The demo runs from a copy of the checkout that has no ``.venv`` (as in CI or any
checkout whose environment lives elsewhere), so it must start the service, the kiosk
and the vet tool with the interpreter it was started with. Then a take is sealed with
the demo kiosk's own config, as the kiosk seals one, and its header is read: the demo
must seal to post-quantum keys only, and the team's key must open what it sealed.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import sqlite3
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
from sync.envelope import (
    WrongPassphrase,
    open_bytes,
    open_sealed,
    read_protected_identity_file,
)
from sync.envelope.header import read_header
from tests.audio_fakes import RATE, FakeStreams, record, tone
from tests.harness.kiosk_app import png_pixels

REPO = Path(__file__).resolve().parent.parent
#: What the demo needs of a checkout; everything else (.venv above all) is left out.
CHECKOUT = ["kiosk", "sync", "assets", "tests", "pyproject.toml", "README.md"]
#: The passphrase deploy/demo.py protects the demo team's keys with.
DEMO_PASSPHRASE = "demo passphrase: never use for real keys"


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
    assert f"the kiosk is enrolled with the central service at http://127.0.0.1:{port}" \
        in done.stdout
    published = done.stdout.split("demo: vet publish: story ", 1)[1].split(",", 1)[0]
    assert f"visitor walkthrough (en): played story {published} to its end" in done.stdout
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


def test_the_demo_walkthroughs_sync_to_the_vetting_queue_byte_identical(
        demo: tuple[Path, str]) -> None:
    data, stdout = demo
    queued = [line.split("pulled: ", 1)[1].split(",", 1)[0] for line in stdout.splitlines()
              if line.startswith("demo: in the queue and pulled: ")]
    assert len(queued) == 2 and len(set(queued)) == 2
    assert stdout.count("byte-identical to the kiosk's sealed files") == 2
    for submission_id in queued:
        kiosk_files = sorted((data / "kiosk" / "outbox" / submission_id).glob("*.age"))
        assert len(kiosk_files) == 3  # two answers and the manifest
        for sealed in kiosk_files:
            pulled = data / "vet" / "pulled" / submission_id / sealed.name
            assert pulled.read_bytes() == sealed.read_bytes()
    store = sqlite3.connect(data / "kiosk" / "kiosk.db")
    try:
        states = dict(store.execute("select submission_id, state from outbox"))
    finally:
        store.close()
    # Acknowledged with a verified receipt; the retention period keeps the local copy.
    assert all(states[s] == "acknowledged" for s in queued), states
    for submission_id in queued:
        assert (data / "kiosk" / "outbox" / submission_id / "manifest.json.age").is_file()


def test_demo_starts_service_and_kiosk_without_a_venv_in_the_checkout(
        demo: tuple[Path, str]) -> None:
    data, _ = demo
    assert (data / "central").is_dir()
    assert (data / "kiosk").is_dir()  # the kiosk ran with the demo config's data_dir


def _team_identities(data: Path, name: str) -> list:
    """A key file the demo's ``vet keygen`` made, opened with the demo passphrase."""
    path = {"team": data / "vet" / "keys" / "team.age",
            "escrow": data / "team" / "escrow.age"}[name]
    assert path.stat().st_mode & 0o077 == 0
    with pytest.raises(WrongPassphrase):
        read_protected_identity_file(path, "not the passphrase")
    return read_protected_identity_file(path, DEMO_PASSPHRASE)


def test_the_demo_config_names_post_quantum_keys_kept_private(demo: tuple[Path, str]) -> None:
    data, stdout = demo
    config = tomllib.loads((data / "kiosk.toml").read_text())
    assert len(config["recipients"]) == 2
    assert all(r.startswith("age1pq1") for r in config["recipients"])
    # The team's and the escrow identity rest under a passphrase (age -p form).
    (team,) = _team_identities(data, "team")
    (escrow,) = _team_identities(data, "escrow")
    assert config["recipients"] == [str(team.recipient()), str(escrow.recipient())]
    # The kiosk pins the team's publishing key; the service checks catalogs with it.
    publisher = (data / "team" / "public-keys.txt").read_text().split("publisher: ")[1]
    assert config["publisher_key"] == publisher.strip()
    assert "catalog: version 2" in stdout


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

    team = _team_identities(data, "team")
    with open_sealed(part, identities=team) as f:
        samples, rate = sf.read(io.BytesIO(f.read()), dtype="int16")
    assert rate == RATE and len(samples) == result.frames >= RATE
    assert json.loads(open_bytes(manifest.read_bytes(), team))["parts"][0]["name"] == name
    escrow = _team_identities(data, "escrow")
    assert json.loads(open_bytes(manifest.read_bytes(), escrow))["display_name"] == "Anonymous"
