"""The S3 blob store after a crash between an S3 write and its PostgreSQL record.

A child process (a real second Python process, as a service instance would be) appends
with a hook that ends it with ``os._exit(1)`` at one named point of
sync/central/storage/s3_blobs.py: no cleanup, no ``finally``, no closed connection.
Then a fresh store, as a restarted service would open, checks that the offset and the
ledger never went backwards, that an append at the recorded offset succeeds, and that
the finished object is byte-identical to what was sent. moto's real server and the
private PostgreSQL 15 are shared by both processes over loopback / a Unix socket.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from sync.central.storage.base import Upload
from sync.central.storage.pg_meta import PostgresMetaStore
from sync.central.storage.s3_blobs import (
    HOOK_COMPLETED_IN_S3,
    HOOK_LAST_PART_UPLOADED,
    HOOK_PART_UPLOADED,
    PART,
    S3BlobStore,
)
from sync.central.storage.s3_objects import S3Objects, S3Settings, StorageUnavailable
from tests.harness.central import new_submission_id
from tests.harness.s3 import S3Endpoint, s3_bucket, s3_endpoint  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
UPLOAD = "ab" * 16

# The child: one append through a store whose hook dies at ``crash_at``. The bytes come
# from a file, so the parent decides exactly what the child sends.
CHILD = r"""
import json, os, sys
from pathlib import Path
from sync.central.storage.s3_blobs import S3BlobStore
from sync.central.storage.s3_objects import S3Objects, S3Settings, StorageUnavailable

args = json.loads(sys.argv[1])

def hook(point):
    if point == args["crash_at"]:
        os._exit(1)  # a crash: no cleanup, no rollback sent, no close

store = S3BlobStore(S3Objects(S3Settings(**args["settings"])), args["dsn"], hook=hook)
data = Path(args["data"]).read_bytes()
store.append_upload(args["upload"], args["offset"],
                    [data[i:i + 1048576] for i in range(0, len(data), 1048576)])
sys.exit(0)  # reaching here means the crash point was never passed
"""


def settings(endpoint: S3Endpoint, bucket: str) -> S3Settings:
    return S3Settings(endpoint_url=endpoint.endpoint_url, bucket=bucket,
                      access_key_id=endpoint.access_key_id,
                      secret_access_key=endpoint.secret_access_key,
                      region=endpoint.region, prefix="central")


class Setup:
    def __init__(self, endpoint: S3Endpoint, bucket: str, dsn: str, tmp: Path) -> None:
        self.endpoint, self.bucket, self.dsn, self.tmp = endpoint, bucket, dsn, tmp
        self.meta = PostgresMetaStore(dsn, create=True)
        self.objects = S3Objects(settings(endpoint, bucket))
        self.stores: list[S3BlobStore] = []

    def store(self) -> S3BlobStore:
        """A freshly opened store: what a restarted service would have."""
        made = S3BlobStore(self.objects, self.dsn, create=True)
        self.stores.append(made)
        return made

    def declare(self, length: int) -> None:
        self.meta.create_upload(Upload(UPLOAD, "dev-0123456789abcdef", new_submission_id(),
                                       "audio.opus", length, 0, 1e9, 3e9, None, None))

    def crash_append(self, offset: int, data: bytes, crash_at: str) -> None:
        path = self.tmp / "child-data"
        path.write_bytes(data)
        s = settings(self.endpoint, self.bucket)
        args = {"settings": s.__dict__, "dsn": self.dsn, "upload": UPLOAD,
                "offset": offset, "data": str(path), "crash_at": crash_at}
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], cwd=REPO,
                              capture_output=True, timeout=120)
        # 1 and nothing on stderr: the hook fired (an exception would print a trace).
        assert done.returncode == 1, done.stderr.decode()[-2000:]
        assert done.stderr == b"", done.stderr.decode()[-2000:]

    def offset(self) -> int:
        got = self.meta.get_upload(UPLOAD)
        assert got is not None
        return got.offset

    def ledger(self) -> tuple[int, bool, list[int], int]:
        """(size, completed, recorded part numbers, tail length) from SQL."""
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute("SELECT size, completed FROM upload_blobs"
                               " WHERE upload_id = %s", (UPLOAD,)).fetchone()
            numbers = [int(r[0]) for r in conn.execute(
                "SELECT number FROM upload_blob_parts WHERE upload_id = %s ORDER BY number",
                (UPLOAD,))]
            tail = conn.execute("SELECT length(data) FROM upload_tails WHERE upload_id = %s",
                                (UPLOAD,)).fetchone()
        assert row is not None
        return int(row[0]), bool(row[1]), numbers, 0 if tail is None else int(tail[0])

    def s3_upload_id(self) -> str:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute("SELECT s3_upload_id FROM upload_blobs WHERE upload_id = %s",
                               (UPLOAD,)).fetchone()
        assert row is not None
        return str(row[0])

    def read(self, store: S3BlobStore) -> bytes:
        return b"".join(store.read_upload(UPLOAD))

    def close(self) -> None:
        for store in self.stores:
            store.close()
        self.meta.close()


@pytest.fixture
def setup(s3_endpoint: S3Endpoint, s3_bucket: str,  # noqa: F811
          postgres_dsn: str, tmp_path: Path) -> Iterator[Setup]:
    made = Setup(s3_endpoint, s3_bucket, postgres_dsn, tmp_path)
    try:
        yield made
    finally:
        made.close()


def pieces(data: bytes) -> list[bytes]:
    return [data[i:i + MiB] for i in range(0, len(data), MiB)]


def test_crash_after_a_part_is_uploaded_before_it_is_recorded(setup: Setup) -> None:
    data = os.urandom(2 * PART + 1000)
    store = setup.store()
    store.create_upload(UPLOAD)
    setup.declare(len(data))
    store.append_upload(UPLOAD, 0, pieces(data[:3 * MiB]))
    # The child sends DIFFERENT bytes for the same range, so the final check also shows
    # that its unrecorded part 1 was replaced, never used.
    wrong = bytes(b ^ 0xFF for b in data[3 * MiB:12 * MiB])
    setup.crash_append(3 * MiB, wrong, HOOK_PART_UPLOADED)
    # The part is in S3 (diagnostic listing), but nothing moved in PostgreSQL.
    listed = setup.objects.list_parts(f"uploads/{UPLOAD}", setup.s3_upload_id())
    assert [(n, size) for n, size, _ in listed] == [(1, PART)]
    assert setup.ledger() == (3 * MiB, False, [], 3 * MiB)
    assert setup.offset() == 3 * MiB
    # A restarted service: append at the recorded offset, in two PATCHes.
    again = setup.store()
    assert again.upload_size(UPLOAD) == 3 * MiB
    assert again.append_upload(UPLOAD, 3 * MiB, pieces(data[3 * MiB:10 * MiB])) == 10 * MiB
    assert setup.offset() == 10 * MiB
    assert again.append_upload(UPLOAD, 10 * MiB, pieces(data[10 * MiB:])) == len(data)
    assert setup.ledger() == (len(data), True, [1, 2, 3], 0)
    assert setup.offset() == len(data)
    got = setup.read(again)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("crash_at", [HOOK_LAST_PART_UPLOADED, HOOK_COMPLETED_IN_S3])
@pytest.mark.parametrize("resume", ["empty_commit", "read"])
def test_crash_while_completing(setup: Setup, crash_at: str, resume: str) -> None:
    """(b) the tail went up as the last part, or (c) S3 completed the object, and the
    process died before PostgreSQL recorded it. The offset already is the length (it
    moved with the last recorded bytes); the completion is rolled forward either by a
    commit at that offset or by the first read."""
    data = os.urandom(PART + MiB + 17)
    store = setup.store()
    store.create_upload(UPLOAD)
    setup.declare(len(data))
    store.append_upload(UPLOAD, 0, pieces(data[:5 * MiB]))
    setup.crash_append(5 * MiB, data[5 * MiB:], crash_at)
    assert setup.ledger() == (len(data), False, [1], MiB + 17)  # tail still kept
    assert setup.offset() == len(data)
    completed_in_s3 = setup.objects.head(f"uploads/{UPLOAD}") is not None
    assert completed_in_s3 == (crash_at == HOOK_COMPLETED_IN_S3)
    again = setup.store()
    assert again.upload_size(UPLOAD) == len(data)
    if resume == "empty_commit":
        assert again.open_append(UPLOAD, len(data)).commit() == len(data)
        assert setup.ledger() == (len(data), True, [1, 2], 0)
    got = setup.read(again)
    assert got == data
    assert setup.ledger() == (len(data), True, [1, 2], 0)
    assert setup.offset() == len(data)


def test_a_failed_completion_does_not_fail_the_recorded_append(setup: Setup) -> None:
    """S3 fails while completing (here a hook raising what S3Objects raises for an
    unreachable store): the append's bytes are already recorded with the offset, so the
    commit reports success, and the completion is rolled forward by the next read."""
    data = os.urandom(PART + 33)

    def unreachable(point: str) -> None:
        if point == HOOK_LAST_PART_UPLOADED:
            raise StorageUnavailable("object store unreachable (test)")

    store = setup.store()
    store.create_upload(UPLOAD)
    setup.declare(len(data))
    store.hook = unreachable
    assert store.append_upload(UPLOAD, 0, pieces(data)) == len(data)
    assert setup.ledger() == (len(data), False, [1], 33)
    assert setup.offset() == len(data)
    store.hook = None
    assert setup.read(store) == data
    assert setup.ledger() == (len(data), True, [1, 2], 0)
