"""Enrolment on the kiosk side (kiosk/device.py) against an in-memory service, the
device files it writes, the [sync] config section and the sync command's output."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import httpx
import pytest

from kiosk.config import ConfigError, SyncConfig, parse
from kiosk.device import (
    AlreadyEnrolled,
    DeviceError,
    SyncState,
    enrol_device,
    load_device,
    load_enrolment,
    read_sync_state,
    write_sync_state,
)
from sync.client.enrol import EnrolFailed, EnrolRefused
from sync.signing import SigningKey, format_signing_key_file
from tests.sync_fakes import CODE, FakeCentral

URL = "http://central.test"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_enrol_writes_the_key_and_pins_the_service_key(tmp_path: Path) -> None:
    central = FakeCentral()
    enrolment = enrol_device(tmp_path, server_url=URL + "/", code=CODE,
                             transport=central.transport(), now=123.0)
    assert enrolment.server_url == URL and enrolment.enrolled_at == 123.0
    assert enrolment.service_key == central.service_key
    assert enrolment.token not in repr(enrolment)
    doc = json.loads((tmp_path / "device.json").read_text())
    assert set(doc) == {"device_id", "server_url", "service_key", "token", "enrolled_at",
                        "public_key"}
    assert doc["service_key"] == str(central.service_key)
    assert mode(tmp_path / "device.json") == 0o600 and mode(tmp_path / "device.key") == 0o600
    loaded, key = load_device(tmp_path)
    assert loaded == enrolment
    assert central.device_keys[loaded.device_id] == key.verify_key
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_refused_code_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(EnrolRefused):
        enrol_device(tmp_path, server_url=URL, code="WRONG", transport=FakeCentral().transport())
    assert load_enrolment(tmp_path) is None and not (tmp_path / "device.key").exists()


def test_no_re_enrolment_without_force_and_a_failed_one_keeps_the_old(tmp_path: Path) -> None:
    central = FakeCentral()
    first = enrol_device(tmp_path, server_url=URL, code=CODE, transport=central.transport())
    key_file = (tmp_path / "device.key").read_text()
    central.codes.add("NEW")
    with pytest.raises(AlreadyEnrolled):
        enrol_device(tmp_path, server_url=URL, code="NEW", transport=central.transport())
    with pytest.raises(EnrolRefused):
        enrol_device(tmp_path, server_url=URL, code="USED", force=True,
                     transport=central.transport())
    assert load_enrolment(tmp_path) == first
    assert (tmp_path / "device.key").read_text() == key_file
    write_sync_state(tmp_path, SyncState(last_sync_at=5.0, last_error="revoked", revoked=True))
    second = enrol_device(tmp_path, server_url=URL, code="NEW", force=True,
                          transport=central.transport())
    assert second.device_id != first.device_id
    state = read_sync_state(tmp_path)
    assert not state.revoked and state.last_error is None and state.last_sync_at == 5.0


@pytest.mark.parametrize(("reply", "code"), [
    (httpx.Response(201, json={"device_id": "nope", "token": "idrdev_x",
                               "service_key": "idrverify1x"}), "bad_enrol_reply"),
    (httpx.Response(201, json={"device_id": "dev-0123456789abcdef", "token": "idrdev_x",
                               "service_key": "idrverify1qqqq"}), "bad_service_key"),
    (httpx.Response(500, json={"error": "internal", "detail": "x"}), "internal"),
    (httpx.Response(400, text="<html>"), "http_400"),
])
def test_a_bad_enrol_reply_pins_nothing(tmp_path: Path, reply, code) -> None:
    with pytest.raises(EnrolFailed) as caught:
        enrol_device(tmp_path, server_url=URL, code=CODE,
                     transport=httpx.MockTransport(lambda r: reply))
    assert caught.value.code == code and load_enrolment(tmp_path) is None


def test_a_key_that_is_not_the_enrolled_one_is_refused(tmp_path: Path) -> None:
    enrol_device(tmp_path, server_url=URL, code=CODE, transport=FakeCentral().transport())
    (tmp_path / "device.key").write_text(format_signing_key_file(SigningKey.generate()))
    with pytest.raises(DeviceError, match="not the key enrolled"):
        load_device(tmp_path)


@pytest.mark.parametrize("text", ["{oops", "[]", '{"device_id": "dev-1"}'])
def test_a_broken_device_file_is_an_error_not_a_crash(tmp_path: Path, text: str) -> None:
    (tmp_path / "device.json").write_text(text)
    with pytest.raises(DeviceError):
        load_enrolment(tmp_path)


def test_sync_state_round_trip_and_garbage(tmp_path: Path) -> None:
    assert read_sync_state(tmp_path) == SyncState()
    write_sync_state(tmp_path, SyncState(1.0, "network", False, 2.0))
    assert read_sync_state(tmp_path) == SyncState(1.0, "network", False, 2.0)
    assert json.loads((tmp_path / "sync-state.json").read_text()) == {
        "last_sync_at": 1.0, "last_error": "network", "revoked": False, "last_attempt_at": 2.0}
    (tmp_path / "sync-state.json").write_text('{"last_error": "free text here", "revoked": 1}')
    assert read_sync_state(tmp_path) == SyncState()


# -- config -------------------------------------------------------------------------------------

def test_the_sync_section_defaults_and_validation(tmp_path: Path) -> None:
    cfg = parse({}, base_dir=tmp_path)
    assert cfg.sync == SyncConfig() and cfg.sync.retention_days == 7
    assert cfg.sync.chunk_bytes == 4 * 1024 * 1024 and cfg.sync.interval_s == 60
    cfg = parse({"sync": {"retention_days": 0, "chunk_bytes": 65536, "interval_s": 5,
                          "connect_timeout_s": 1, "read_timeout_s": 2,
                          "attempt_deadline_s": 3}}, base_dir=tmp_path)
    assert (cfg.sync.retention_days, cfg.sync.chunk_bytes, cfg.sync.attempt_deadline_s) == (
        0, 65536, 3)
    for bad, message in [({"retention_days": -1}, "sync.retention_days"),
                         ({"chunk_bytes": 100}, "sync.chunk_bytes"),
                         ({"chunk_bytes": 65536.0}, "sync.chunk_bytes"),
                         ({"read_timeout_s": 0}, "sync.read_timeout_s"),
                         ({"interval_s": True}, "sync.interval_s"),
                         ({"retry": 1}, "unknown key sync.retry")]:
        with pytest.raises(ConfigError, match=message):
            parse({"sync": bad}, base_dir=tmp_path)


# -- the sync command's progress output ----------------------------------------------------------

class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise() -> None:
    from kiosk.cli import _Bar
    from kiosk.sync_runner import SyncProgress

    steps = [SyncProgress("heartbeat", 0, 0, 0, 0), SyncProgress("upload", 0, 2000, 0, 2),
             SyncProgress("upload", 1000, 2000, 1, 2), SyncProgress("upload", 2000, 2000, 2, 2),
             SyncProgress("done", 2000, 2000, 2, 2)]
    tty, plain = Tty(), io.StringIO()
    for stream in (tty, plain):
        bar = _Bar(stream)
        for step in steps:
            bar(step)
        bar.end()
    assert tty.getvalue().count("\r") == 3 and tty.getvalue().endswith("\n")
    assert "100%" in tty.getvalue() and "submissions 2/2" in tty.getvalue()
    assert "\r" not in plain.getvalue()
    assert plain.getvalue().splitlines() == [
        "submissions 0/2, 0 of 2000 bytes", "submissions 1/2, 1000 of 2000 bytes",
        "submissions 2/2, 2000 of 2000 bytes"]
