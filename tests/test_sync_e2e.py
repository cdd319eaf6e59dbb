"""End to end: a real ``central serve`` on loopback, a kiosk enrolled with the CLI,
sealed submissions made without the GUI (SessionCustody and the fake microphone),
``kiosk sync --once``, then a vetter downloads every part: byte-identical to the
kiosk's sealed files, and the parts and manifests open with the team's identity."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import soundfile as sf

from kiosk.audio.recorder import Recorder
from kiosk.vault.custody import SessionCustody
from kiosk.vault.layout import OUTBOX
from kiosk.vault.store import Store
from sync.envelope import X25519Identity, open_bytes, open_sealed
from tests.audio_fakes import FakeStreams, record, tone
from tests.harness.central import CentralService

REPO = Path(__file__).resolve().parent.parent


def kiosk(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def submit(data_dir: Path, team: X25519Identity, answers: int, name: str) -> str:
    store = Store.in_data_dir(data_dir)
    try:
        session = SessionCustody(data_dir=data_dir, store=store, recipients=[team.recipient()])
        for i in range(answers):
            _, take = record(session, Recorder(FakeStreams([tone(0.4, hz=300 + 100 * i)])),
                             f"q{i + 1}")
            while take.meters().elapsed_s < 0.4:
                time.sleep(0.01)
            take.stop()
            while not take.done:
                time.sleep(0.01)
        session.submit({"display_name": name, "language": "en"})
        return session.submission_id
    finally:
        store.close()


@pytest.fixture
def service(tmp_path: Path):
    with CentralService(tmp_path / "central") as svc:
        yield svc


def test_enrol_sync_and_a_vetter_gets_every_byte(tmp_path: Path, service) -> None:
    data_dir = tmp_path / "kiosk"
    config = tmp_path / "kiosk.toml"
    config.write_text(f'data_dir = "{data_dir}"\n[sync]\nchunk_bytes = 65536\n')
    team = X25519Identity.generate()

    # Not enrolled yet: sync says so with exit 2.
    done = kiosk(config, "sync", "--once")
    assert done.returncode == 2 and "not enrolled" in done.stderr

    done = kiosk(config, "enrol", "--server", service.url, "--code", service.enrol_code())
    assert done.returncode == 0, done.stderr
    device = json.loads((data_dir / "device.json").read_text())
    assert device["service_key"] == service.service_key
    assert device["server_url"] == service.url
    assert (data_dir / "device.json").stat().st_mode & 0o777 == 0o600
    assert (data_dir / "device.key").stat().st_mode & 0o777 == 0o600
    assert device["token"] not in done.stdout + done.stderr

    sids = [submit(data_dir, team, 2, "Amina Diallo"), submit(data_dir, team, 1, "Anonymous")]

    done = kiosk(config, "sync", "--once")
    assert done.returncode == 0, done.stderr
    assert "acknowledged 2, pending 0, rejected 0" in done.stdout
    # stdout is not a terminal here: plain lines, no carriage returns.
    assert "\r" not in done.stdout

    vetter = service.vetter_token()
    with httpx.Client(base_url=service.url, timeout=30,
                      headers={"Authorization": f"Bearer {vetter}"}) as client:
        queue = client.get("/api/v1/queue").json()["submissions"]
        assert sorted(s["id"] for s in queue) == sorted(sids)
        for entry in queue:
            folder = data_dir / OUTBOX / entry["id"]
            local = sorted(p.name for p in folder.iterdir())
            assert sorted(p["name"] for p in entry["parts"]) == local
            assert entry["device_id"] == device["device_id"]
            for part in entry["parts"]:
                blob = client.get(f"/api/v1/submissions/{entry['id']}/parts/{part['name']}")
                assert blob.status_code == 200
                assert blob.content == (folder / part["name"]).read_bytes()
                if part["name"] == "manifest.json.age":
                    manifest = json.loads(open_bytes(blob.content, [team]))
                    assert manifest["submission_id"] == entry["id"]
                    assert manifest["display_name"] in ("Amina Diallo", "Anonymous")
                else:
                    out = tmp_path / "part.age"
                    out.write_bytes(blob.content)
                    with open_sealed(out, identities=[team]) as f:
                        audio, rate = sf.read(f, dtype="int16")
                    assert rate == 48_000 and len(audio) >= 0.3 * rate

    # Status says so; a second pass uploads nothing.
    status = json.loads(kiosk(config, "status", "--json").stdout)
    assert status["outbox"] == {"acknowledged": 2}
    assert status["device"]["id"] == device["device_id"]
    assert status["device"]["server_url"] == service.url
    assert status["sync"]["last_error"] is None and status["sync"]["last_sync_at"]
    assert status["sync"]["revoked"] is False
    done = kiosk(config, "sync", "--once")
    assert done.returncode == 0, done.stderr
    assert "acknowledged 0, pending 0, rejected 0, purged 0, sent 0 bytes" in done.stdout

    # Revoked by the centre: sync stops with exit 2, the queue stays, status says so.
    sids.append(submit(data_dir, team, 1, "Anonymous"))
    service.cli("revoke", device["device_id"])
    done = kiosk(config, "sync", "--once")
    assert done.returncode == 2 and "revoked" in done.stderr
    status = json.loads(kiosk(config, "status", "--json").stdout)
    assert status["sync"]["revoked"] is True and status["outbox"]["sealed"] == 1
    text = kiosk(config, "status").stdout
    assert "REVOKED" in text
    assert (data_dir / OUTBOX / sids[-1] / "manifest.json.age").exists()


def test_enrolment_refusals(tmp_path: Path, service) -> None:
    data_dir = tmp_path / "kiosk"
    config = tmp_path / "kiosk.toml"
    config.write_text(f'data_dir = "{data_dir}"\n')
    done = kiosk(config, "enrol", "--server", service.url, "--code", "AAAAA-BBBBB-CCCCC-DDDDD")
    assert done.returncode == 2 and "refused the code" in done.stderr
    assert not (data_dir / "device.json").exists()
    code = service.enrol_code()
    assert kiosk(config, "enrol", "--server", service.url, "--code", code).returncode == 0
    first = json.loads((data_dir / "device.json").read_text())
    # Once enrolled: no silent re-enrolment; a used code is refused even with --force.
    done = kiosk(config, "enrol", "--server", service.url, "--code", service.enrol_code())
    assert done.returncode == 2 and "--force" in done.stderr
    done = kiosk(config, "enrol", "--server", service.url, "--code", code, "--force")
    assert done.returncode == 2 and "refused" in done.stderr
    assert json.loads((data_dir / "device.json").read_text()) == first  # left whole
    done = kiosk(config, "enrol", "--server", service.url, "--code", service.enrol_code(),
                 "--force")
    assert done.returncode == 0, done.stderr
    assert json.loads((data_dir / "device.json").read_text())["device_id"] != first["device_id"]
    # An unreachable service: exit 2 and a clear message.
    done = kiosk(config, "enrol", "--server", "http://127.0.0.1:9", "--code", code, "--force")
    assert done.returncode == 2 and "network" in done.stderr
    # A service that is down: exit 1, the error on stderr, the queue kept for later.
    from tests.sync_fakes import make_submission

    store = Store.in_data_dir(data_dir)
    sid = make_submission(data_dir, store)
    store.close()
    service.kill()
    done = kiosk(config, "sync", "--once")
    assert done.returncode == 1 and "network" in done.stderr
    assert "pending 1" in done.stdout
    service.start()
    done = kiosk(config, "sync", "--once")
    assert done.returncode == 0, done.stderr
    assert (data_dir / OUTBOX / sid / "manifest.json.age").exists()  # retention: kept
