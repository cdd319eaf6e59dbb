"""`kiosk status` tells staff whether new recordings are sealed post-quantum."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sync.envelope import X25519Identity
from sync.envelope.mlkem import MlkemIdentity


def _status(tmp_path: Path, recipients: list[str]) -> dict:
    config = tmp_path / "kiosk.toml"
    # A mix is refused at load unless the config says it is meant (issue 8).
    mixed = len({r.startswith("age1pq1") for r in recipients}) > 1
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nrecipients = {json.dumps(recipients)}\n'
                      + ("allow_classic_recipients = true\n" if mixed else ""))
    done = subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config), "status",
                           "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["sealing"]


@pytest.mark.parametrize(("kinds", "post_quantum", "phrase"), [
    (["pq", "pq"], True, "all post-quantum"),
    (["pq", "x25519"], False, "NOT post-quantum: 1 classic"),
    (["x25519"], False, "NOT post-quantum"),
    ([], False, "recording is disabled"),
])
def test_status_reports_post_quantum_sealing(tmp_path: Path, kinds: list[str],
                                             post_quantum: bool, phrase: str) -> None:
    make = {"pq": MlkemIdentity.generate, "x25519": X25519Identity.generate}
    recipients = [str(make[k]().recipient()) for k in kinds]
    sealing = _status(tmp_path, recipients)
    assert sealing["post_quantum"] is post_quantum
    assert sealing["recipients"] == len(kinds)
    assert phrase in sealing["summary"]


def _kiosk(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def test_status_shows_what_the_staff_screen_shows(tmp_path: Path) -> None:
    from kiosk.ids import new_submission_id
    from kiosk.vault.store import Store

    data = tmp_path / "data"
    store = Store.in_data_dir(data)
    for _ in range(2):
        sid = new_submission_id()
        store.open_submission(sid, now=1.0)
        store.mark_submitted(sid, manifest_size=1, manifest_sha256="0" * 64, now=2.0)
    store.open_submission(new_submission_id(), now=3.0)
    store.close()
    (data / "device.json").write_text(json.dumps({"device_id": "dev-7",
                                                  "server_url": "http://127.0.0.1:9"}))
    (data / "sync-state.json").write_text(json.dumps({"last_sync_at": 0, "last_error": None}))
    config = tmp_path / "kiosk.toml"
    config.write_text(f'data_dir = "{data}"\n')

    doc = json.loads(_kiosk(config, "status", "--json").stdout)
    assert doc["data_dir"] == str(data) and doc["server_url"].startswith("http")
    assert doc["submissions"] == {"open": 1, "submitted": 2}
    assert doc["device"] == {"id": "dev-7", "error": None, "server_url": "http://127.0.0.1:9",
                             "revoked": False}
    assert doc["sync"] == {"last_sync_at": 0, "last_error": None, "revoked": False,
                           "last_attempt_at": None}
    assert doc["outbox"] == {"sealed": 2}
    assert doc["catalog"]["version"] is None
    assert doc["free_disk_bytes"] > 0
    assert doc["recording"] == {"parts": 0, "overflows": 0, "parts_with_overflows": 0}
    assert doc["version"]

    text = _kiosk(config, "status").stdout.splitlines()
    assert text[:3] == [f"Data directory: {data}", f"Central service: {doc['server_url']}",
                        "Sealing: no recipients: recording is disabled until a catalog or"
                        " the config names them"]
    assert "Submissions: 2 submitted, 1 open" in text
    assert "Catalog: no catalog" in text
    assert "Last sync: 1970-01-01 00:00 UTC" in text
    assert "Device: dev-7" in text
    assert "Outbox: 2 sealed" in text
    assert "Enrolled service: http://127.0.0.1:9" in text
    assert any(line.startswith("Free disk: ") and line.endswith("B") for line in text)


def test_status_of_a_kiosk_never_started(tmp_path: Path) -> None:
    config = tmp_path / "kiosk.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    text = _kiosk(config, "status").stdout
    assert "Submissions: none" in text and "Last sync: never" in text
    assert "Device: not enrolled" in text


@pytest.mark.parametrize(("size", "shown"), [
    (None, "unknown"), (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (123_456_789, "123.5 MB"),
    (64_000_000_000, "64.0 GB"), (5_000_000_000_000, "5000.0 GB")])
def test_human_bytes(size: int | None, shown: str) -> None:
    from kiosk.status import human_bytes

    assert human_bytes(size) == shown


def test_when_and_submissions_summary() -> None:
    from kiosk.status import submissions_summary, when

    assert when(None) == "never" and when(None, never="-") == "-"
    assert when(86_400 * 365) == "1971-01-01 00:00 UTC"
    assert when("2026-11-28T10:00:00Z") == "2026-11-28T10:00:00Z"
    assert submissions_summary({}) == "none"
    assert submissions_summary({"open": 0}) == "none"
    assert submissions_summary({"open": 1, "submitted": 3, "acknowledged": 1}) == (
        "3 submitted, 1 acknowledged, 1 open")


def test_status_shows_the_catalog_the_kiosk_would_show(tmp_path: Path) -> None:
    config = tmp_path / "kiosk.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n'
                      f'recipients = ["{MlkemIdentity.generate().recipient()}"]\n')
    made = subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config),
                           "demo-stories"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    done = subprocess.run([sys.executable, "-m", "kiosk", "--config", str(config), "status"],
                          capture_output=True, text=True, timeout=60)
    assert "Catalog: version 1, 8 stories" in done.stdout, done.stdout
