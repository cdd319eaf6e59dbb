"""The storage layer, the audit chain, start-up reconciliation and the ``central`` CLI."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.central.core import Central, init, normalise_code, parse_duration
from sync.central.reconcile import reconcile
from sync.central.storage.base import (
    AuditEvent,
    Conflict,
    OffsetMismatch,
    StorageError,
    StoredPart,
    StoredSubmission,
    Upload,
)
from sync.central.storage.file_blobs import FileBlobStore
from tests.harness.central import REPO, new_submission_id

CENTRAL = [sys.executable, "-m", "sync.central"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CENTRAL, *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO)


# -- blobs ------------------------------------------------------------------------------------

def test_append_leaves_nothing_past_the_durable_offset_on_failure(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    uid = "a" * 32
    blobs.create_upload(uid)
    assert blobs.append_upload(uid, 0, [b"hello ", b"world"]) == 11

    def broken() -> Iterator[bytes]:
        yield b"more bytes"
        raise ValueError("checksum mismatch, say")

    with pytest.raises(ValueError):
        blobs.append_upload(uid, 11, broken())
    assert blobs.upload_size(uid) == 11
    with pytest.raises(OffsetMismatch) as exc:
        blobs.append_upload(uid, 20, [b"x"])
    assert exc.value.actual == 11
    # A crash left bytes past the committed offset: the next append drops them first.
    with (tmp_path / "uploads" / uid).open("ab") as f:
        f.write(b"GARBAGE")
    assert blobs.append_upload(uid, 11, [b"!"]) == 12
    assert b"".join(blobs.read_upload(uid)) == b"hello world!"
    assert b"".join(blobs.read_upload(uid, 6, 11)) == b"world"
    with pytest.raises(StorageError):
        blobs.create_upload("../../etc/passwd")


def test_a_finished_upload_becomes_its_part_by_a_hard_link(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path)
    uid, sid = "b" * 32, new_submission_id()
    blobs.create_upload(uid)
    blobs.append_upload(uid, 0, [b"ciphertext"])
    digest = hashlib.sha256(b"ciphertext").hexdigest()
    blobs.put_part_from_upload(uid, sid, digest)
    assert b"".join(blobs.read_part(sid, digest)) == b"ciphertext"
    assert [(s, d) for s, d, _ in blobs.list_parts()] == [(sid, digest)]
    assert blobs.stray_part_temps() == []
    # The part outlives its upload: the upload's name goes, the bytes stay.
    blobs.delete_upload(uid)
    assert b"".join(blobs.read_part(sid, digest)) == b"ciphertext"


def test_without_hard_links_parts_are_copied_whole_and_checked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*_: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    blobs = FileBlobStore(tmp_path)
    uid, sid = "b" * 32, new_submission_id()
    blobs.create_upload(uid)
    blobs.append_upload(uid, 0, [b"ciphertext"])
    digest = hashlib.sha256(b"ciphertext").hexdigest()
    with pytest.raises(StorageError):
        blobs.put_part_from_upload(uid, sid, "0" * 64)
    assert blobs.list_parts() == [] and blobs.stray_part_temps() == []
    blobs.put_part_from_upload(uid, sid, digest)
    assert b"".join(blobs.read_part(sid, digest)) == b"ciphertext"
    assert [(s, d) for s, d, _ in blobs.list_parts()] == [(sid, digest)]


# -- metadata ----------------------------------------------------------------------------------

def _submission(sid: str, device: str, index: bytes) -> StoredSubmission:
    return StoredSubmission(sid, device, index, "idrsig1x", "received", "2026-01-01T00:00:00Z",
                            b"receipt", "idrsig1y", (StoredPart("a.age", 1, "0" * 64),))


def test_one_submission_per_id_by_constraint(tmp_path: Path) -> None:
    init(tmp_path / "c")
    svc = Central(tmp_path / "c")
    sid = new_submission_id()
    svc.meta.insert_submission(_submission(sid, "dev-0123456789abcdef", b"one"))
    with pytest.raises(Conflict):
        svc.meta.insert_submission(_submission(sid, "dev-0123456789abcdef", b"two"))
    stored = svc.meta.get_submission(sid)
    assert stored is not None and stored.index == b"one"
    conn = sqlite3.connect(tmp_path / "c" / "central.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM submission_parts").fetchone() == (1,)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
    svc.close()


# -- audit --------------------------------------------------------------------------------------

def _audited(tmp_path: Path) -> Path:
    data = tmp_path / "c"
    init(data)
    svc = Central(data)
    for n in range(5):
        svc.meta.append_audit(AuditEvent("cli", "queue_listed", f"x{n}"))
    svc.close()
    return data


def test_audit_verify_passes_an_intact_chain(tmp_path: Path) -> None:
    data = _audited(tmp_path)
    done = run("audit", "verify", "--data", str(data))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "audit chain intact: 5 entries"


@pytest.mark.parametrize(("sql", "seq"), [
    ("UPDATE audit SET subject = 'other' WHERE seq = 3", 3),
    ("UPDATE audit SET at = '2020-01-01T00:00:00Z' WHERE seq = 1", 1),
    ("DELETE FROM audit WHERE seq = 2", 2),
    ("DELETE FROM audit WHERE seq = 5", 5),
    # Another first digit, always (a hash may already start with 'f').
    ("UPDATE audit SET hash = (CASE WHEN substr(hash, 1, 1) = 'f' THEN 'e' ELSE 'f' END)"
     " || substr(hash, 2) WHERE seq = 4", 4),
])
def test_audit_verify_finds_an_edited_or_deleted_row(tmp_path: Path, sql: str,
                                                     seq: int) -> None:
    data = _audited(tmp_path)
    conn = sqlite3.connect(data / "central.sqlite")
    conn.execute(sql)
    conn.commit()
    conn.close()
    done = run("audit", "verify", "--data", str(data))
    assert done.returncode == 1
    assert f"broken at seq {seq}" in done.stdout


def test_audit_holds_ids_only(tmp_path: Path) -> None:
    data = tmp_path / "c"
    init(data)
    code = run("enrol-code", "--data", str(data), "--name", "Front desk kiosk")
    assert code.returncode == 0
    vetter = run("vetter", "add", "--data", str(data), "Alice Example")
    token = vetter.stdout.strip().splitlines()[-1]
    conn = sqlite3.connect(data / "central.sqlite")
    text = repr(conn.execute("SELECT * FROM audit").fetchall())
    conn.close()
    for secret in ("Front desk", "Alice", token, code.stdout.strip().splitlines()[-1]):
        assert secret not in text


# -- CLI ------------------------------------------------------------------------------------------

def test_init_is_idempotent_and_keeps_the_key(tmp_path: Path) -> None:
    data = tmp_path / "c"
    first = run("init", "--data", str(data))
    second = run("init", "--data", str(data))
    assert first.returncode == second.returncode == 0
    key = first.stdout.strip().splitlines()[-1]
    assert key.startswith("idrverify1") and second.stdout.strip().splitlines()[-1] == key
    assert stat.S_IMODE((data / "service.key").stat().st_mode) == 0o600


def test_codes_and_tokens_come_last_and_errors_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "c"
    assert run("init", "--data", str(data)).returncode == 0
    code = run("enrol-code", "--data", str(data), "--expires", "30m").stdout
    assert normalise_code(code.strip().splitlines()[-1]) is not None
    token = run("vetter", "add", "--data", str(data), "Bob").stdout.strip().splitlines()[-1]
    assert token.startswith("idrvet_") and len(token) > 40
    for args in (["enrol-code", "--data", str(data), "--expires", "soon"],
                 ["revoke", "--data", str(data), "dev-0000000000000000"],
                 ["devices", "--data", str(tmp_path / "missing")],
                 ["serve", "--data", str(tmp_path / "missing")]):
        done = run(*args)
        assert done.returncode == 2, args
        assert done.stderr.strip(), args
    listing = run("devices", "--data", str(data))
    assert listing.returncode == 0
    assert listing.stdout.split()[:3] == ["id", "name", "enrolled"]
    assert parse_duration("7d") == 7 * 86400 and parse_duration("90s") == 90


# -- reconciliation -------------------------------------------------------------------------------

def _upload(uid: str, offset: int, length: int, *, finished: bool = False,
            expires_in: float = 3600) -> Upload:
    now = time.time()
    return Upload(uid, "dev-0123456789abcdef", new_submission_id(), "a.age", length, offset,
                  now, now + expires_in, now if finished else None,
                  "0" * 64 if finished else None)


def test_reconciliation_after_a_crash(tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "c"
    init(data)
    svc = Central(data)
    longer, missing, orphan, expired = "1" * 32, "2" * 32, "3" * 32, "4" * 32
    svc.meta.create_upload(_upload(longer, 5, 10))
    svc.blobs.create_upload(longer)
    svc.blobs.append_upload(longer, 0, [b"12345678"])  # 3 bytes never acknowledged
    svc.meta.create_upload(_upload(missing, 4, 10))    # its file is gone
    svc.blobs.create_upload(orphan)                     # a file without a row
    svc.meta.create_upload(_upload(expired, 0, 10, expires_in=-1))
    svc.blobs.create_upload(expired)
    (data / "tmp" / "chunk-deadbeef").write_bytes(b"spooled")
    # Parts: one referenced, one orphan old enough, one orphan too young, one missing.
    sid, lost = new_submission_id(), new_submission_id()
    good_digest = hashlib.sha256(b"kept").hexdigest()
    svc.blobs.create_upload("5" * 32)
    svc.blobs.append_upload("5" * 32, 0, [b"kept"])
    svc.blobs.put_part_from_upload("5" * 32, sid, good_digest)
    svc.meta.insert_submission(StoredSubmission(
        sid, "dev-0123456789abcdef", b"i", "s", "received", "2026-01-01T00:00:00Z", b"r",
        "s", (StoredPart("a.age", 4, good_digest),)))
    svc.meta.insert_submission(StoredSubmission(
        lost, "dev-0123456789abcdef", b"i", "s", "received", "2026-01-01T00:00:00Z", b"r",
        "s", (StoredPart("a.age", 4, "e" * 64),)))
    old_sid, young_sid = new_submission_id(), new_submission_id()
    # Each from its own upload: a part is a hard link to its upload's file, so parts
    # made from one upload would share one modification time.
    for upload, submission in (("6" * 32, old_sid), ("7" * 32, young_sid)):
        svc.blobs.create_upload(upload)
        svc.blobs.append_upload(upload, 0, [b"kept"])
        svc.blobs.put_part_from_upload(upload, submission, good_digest)
        svc.blobs.delete_upload(upload)
    old = data / "parts" / old_sid / good_digest
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    svc.blobs.delete_upload("5" * 32)
    with caplog.at_level(logging.INFO, logger="central"):
        counts = reconcile(svc)
    assert counts["uploads_truncated"] == 1
    assert svc.blobs.upload_size(longer) == 5
    assert counts["uploads_reset"] == 1
    got = svc.meta.get_upload(missing)
    assert got is not None and got.offset == 0 and svc.blobs.upload_size(missing) == 0
    assert counts["upload_files_removed"] == 1 and svc.blobs.upload_size(orphan) is None
    assert counts["uploads_expired"] == 1 and svc.meta.get_upload(expired) is None
    assert counts["tmp_removed"] == 1
    assert counts["orphan_parts_removed"] == 1 and not old.exists()
    assert (data / "parts" / young_sid / good_digest).exists()
    assert (data / "parts" / sid / good_digest).exists()
    assert counts["submissions_missing_parts"] == 1
    assert f"part_missing submission {lost}" in caplog.text
    # A second pass finds nothing more to do (the lost part is still reported).
    again = reconcile(svc)
    assert {k: v for k, v in again.items() if v} == {"submissions_missing_parts": 1}
    svc.close()
