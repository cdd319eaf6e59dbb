"""The BlobStore contract, run on every store: files (the default) and S3 + PostgreSQL.

One parametrized fixture, ``blobs``, gives each test a fresh store of each kind; the test
bodies are shared, never copied. The S3 store talks to moto's real HTTP server on
loopback (tests/harness/s3.py, S3's real 5 MiB minimum part size) and keeps its upload
ledger in a private PostgreSQL 15 (tests/harness/postgres.py). Each store is paired with
the metadata store it is deployed with (SQLite / PostgreSQL), because the declared
length of an upload lives there and the S3 store completes an upload when it is reached.

What only the S3 store has to promise (its ledger, the offset moving in the same
transaction, refusals a multipart upload forces) is at the end, on ``s3_blobs``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sync.central.storage.base import (
    BlobMissing,
    BlobStore,
    ChecksumMismatch,
    MetaStore,
    OffsetMismatch,
    StorageError,
    Upload,
)
from sync.central.storage.file_blobs import FileBlobStore
from sync.central.storage.pg_meta import PostgresMetaStore
from sync.central.storage.s3_blobs import PART, S3BlobStore
from sync.central.storage.s3_objects import S3Objects, S3Settings
from sync.central.storage.sqlite_meta import SqliteMetaStore
from tests.harness.central import new_submission_id
from tests.harness.s3 import S3Endpoint, s3_bucket, s3_endpoint  # noqa: F401  (fixtures)

DEVICE = "dev-0123456789abcdef"
NOW = 1_800_000_000.0
MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def uid(n: int) -> str:
    return f"{n:032x}"


def chunks(data: bytes, size: int = MiB) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at:at + size]


@dataclass
class Blobs:
    """A blob store and the metadata store deployed with it."""

    kind: str
    store: Any  # FileBlobStore | S3BlobStore, both used through the BlobStore methods
    meta: MetaStore
    dsn: str | None = None
    endpoint: S3Endpoint | None = None
    bucket: str | None = None
    closers: list[Any] = field(default_factory=list)

    @property
    def blob(self) -> BlobStore:
        return self.store  # type: ignore[no-any-return]

    def declare(self, upload_id: str, length: int) -> None:
        """The upload row the API inserts (after create_upload), with its length."""
        self.meta.create_upload(Upload(upload_id, DEVICE, new_submission_id(), "audio.opus",
                                       length, 0, NOW, NOW + 3600, None, None))

    def read(self, upload_id: str, start: int = 0, end: int | None = None) -> bytes:
        return b"".join(self.blob.read_upload(upload_id, start, end))


def s3_settings(endpoint: S3Endpoint, bucket: str) -> S3Settings:
    return S3Settings(endpoint_url=endpoint.endpoint_url, bucket=bucket,
                      access_key_id=endpoint.access_key_id,
                      secret_access_key=endpoint.secret_access_key,
                      region=endpoint.region, prefix="central")


def open_s3(request: pytest.FixtureRequest, tmp_path: Path) -> Blobs:
    endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
    bucket: str = request.getfixturevalue("s3_bucket")
    dsn: str = request.getfixturevalue("postgres_dsn")
    meta = PostgresMetaStore(dsn, create=True)
    objects = S3Objects(s3_settings(endpoint, bucket))
    objects.check_bucket()
    store = S3BlobStore(objects, dsn, create=True, spool_dir=tmp_path)
    return Blobs("s3", store, meta, dsn, endpoint, bucket, [store, meta])


@pytest.fixture(params=["files", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Blobs]:
    if request.param == "files":
        meta = SqliteMetaStore(tmp_path / "central.sqlite", create=True)
        made = Blobs("files", FileBlobStore(tmp_path / "data"), meta, closers=[meta])
    else:
        made = open_s3(request, tmp_path)
    try:
        yield made
    finally:
        for thing in made.closers:
            thing.close()


# -- uploads ------------------------------------------------------------------------------

def test_upload_across_part_boundaries_with_small_tail(blobs: Blobs) -> None:
    """Three appends crossing both 8 MiB boundaries, the last one completing the upload
    with a tail far below S3's 5 MiB minimum; read back byte for byte."""
    data = os.urandom(2 * PART + 123_457)
    upload = uid(1)
    blobs.blob.create_upload(upload)
    blobs.declare(upload, len(data))
    assert blobs.blob.upload_size(upload) == 0
    cuts = [0, 3 * MiB, 9 * MiB, len(data)]
    for start, end in zip(cuts, cuts[1:], strict=False):
        assert blobs.blob.append_upload(upload, start, chunks(data[start:end])) == end
        assert blobs.blob.upload_size(upload) == end
    assert upload in blobs.blob.list_uploads()
    assert blobs.read(upload) == data
    for start, end in [(PART - 5, PART + 5), (2 * PART - 1, 2 * PART + 1),
                       (0, 1), (len(data) - 7, len(data)), (len(data) - 7, None),
                       (5, 5), (len(data) + 10, None)]:
        assert blobs.read(upload, start, end) == data[start:end], (start, end)


def test_small_upload_in_one_append(blobs: Blobs) -> None:
    data = os.urandom(1000)
    upload = uid(2)
    blobs.blob.create_upload(upload)
    blobs.declare(upload, len(data))
    assert blobs.blob.append_upload(upload, 0, [data[:10], data[10:]]) == 1000
    assert blobs.read(upload) == data


def test_upload_of_exactly_one_part(blobs: Blobs) -> None:
    """No tail at all: the last part is a whole PART."""
    data = os.urandom(PART)
    upload = uid(3)
    blobs.blob.create_upload(upload)
    blobs.declare(upload, len(data))
    assert blobs.blob.append_upload(upload, 0, chunks(data)) == PART
    assert blobs.read(upload) == data


def test_abort_leaves_nothing_and_the_next_append_succeeds(blobs: Blobs) -> None:
    """What the API does when a chunk's checksum is wrong: write, then abort."""
    data = os.urandom(PART + 4321)
    upload = uid(4)
    blobs.blob.create_upload(upload)
    blobs.declare(upload, len(data))
    blobs.blob.append_upload(upload, 0, [data[:1000]])
    append = blobs.blob.open_append(upload, 1000)
    for piece in chunks(os.urandom(10 * MiB)):  # crosses a part boundary: still nothing
        append.write(piece)
    append.abort()
    append.abort()  # safe to repeat
    assert blobs.blob.upload_size(upload) == 1000
    got = blobs.meta.get_upload(upload)
    assert got is not None and got.offset in (0, 1000)  # files: the caller moves it
    assert blobs.blob.append_upload(upload, 1000, chunks(data[1000:])) == len(data)
    assert blobs.read(upload) == data


def test_abort_after_commit_changes_nothing(blobs: Blobs) -> None:
    upload = uid(5)
    blobs.blob.create_upload(upload)
    append = blobs.blob.open_append(upload, 0)
    append.write(b"abc")
    assert append.commit() == 3
    append.abort()  # the API's finally: after a commit it does nothing
    assert blobs.blob.upload_size(upload) == 3


def test_failing_chunk_source_leaves_the_upload_as_it_was(blobs: Blobs) -> None:
    upload = uid(6)
    blobs.blob.create_upload(upload)
    blobs.blob.append_upload(upload, 0, [b"x" * 100])

    def broken() -> Iterator[bytes]:
        yield os.urandom(PART)
        yield os.urandom(MiB)
        raise OSError("the client went away")

    with pytest.raises(OSError, match="went away"):
        blobs.blob.append_upload(upload, 100, broken())
    assert blobs.blob.upload_size(upload) == 100
    assert blobs.blob.append_upload(upload, 100, [b"y"]) == 101


def test_offset_mismatch(blobs: Blobs) -> None:
    upload = uid(7)
    blobs.blob.create_upload(upload)
    blobs.blob.append_upload(upload, 0, [b"12345"])
    with pytest.raises(OffsetMismatch) as caught:
        blobs.blob.open_append(upload, 9)
    assert caught.value.actual == 5
    with pytest.raises(OffsetMismatch) as caught:
        blobs.blob.append_upload(upload, 6, [b"z"])
    assert caught.value.actual == 5
    with pytest.raises(OffsetMismatch) as caught:
        blobs.blob.open_append(uid(99), 0)  # no such upload: zero bytes stored
    assert caught.value.actual == 0
    assert blobs.blob.upload_size(upload) == 5


def test_truncate_to_current_size(blobs: Blobs) -> None:
    upload = uid(8)
    blobs.blob.create_upload(upload)
    blobs.blob.append_upload(upload, 0, [b"abc"])
    blobs.blob.truncate_upload(upload, 3)
    assert blobs.blob.upload_size(upload) == 3


def test_create_upload_replaces_a_leftover(blobs: Blobs) -> None:
    upload = uid(9)
    blobs.blob.create_upload(upload)
    blobs.blob.append_upload(upload, 0, chunks(os.urandom(PART + 10)))
    blobs.blob.create_upload(upload)
    assert blobs.blob.upload_size(upload) == 0
    data = os.urandom(2000)
    blobs.declare(upload, len(data))
    blobs.blob.append_upload(upload, 0, [data])
    assert blobs.read(upload) == data


def test_delete_upload_is_idempotent(blobs: Blobs) -> None:
    upload = uid(10)
    blobs.blob.create_upload(upload)
    data = os.urandom(3000)
    blobs.declare(upload, len(data))
    blobs.blob.append_upload(upload, 0, [data])
    other = uid(11)
    blobs.blob.create_upload(other)  # incomplete, never finished
    blobs.blob.append_upload(other, 0, [b"half"])
    for gone in (upload, other):
        blobs.blob.delete_upload(gone)
        blobs.blob.delete_upload(gone)
        assert blobs.blob.upload_size(gone) is None
        assert gone not in blobs.blob.list_uploads()
        with pytest.raises(BlobMissing):
            blobs.read(gone)
    blobs.blob.delete_upload(uid(12))  # never existed


def test_bad_keys_are_refused(blobs: Blobs) -> None:
    for bad in ("../etc", "ABC", "", "0" * 31):
        with pytest.raises(StorageError):
            blobs.blob.create_upload(bad)
    with pytest.raises(StorageError):
        blobs.blob.part_size("../x", "0" * 64)
    with pytest.raises(StorageError):
        blobs.blob.public_audio_size("a/b", "0" * 64)
    with pytest.raises(StorageError):
        blobs.blob.put_public_audio("Bad.Story", sha(b""), [b""])


# -- parts ------------------------------------------------------------------------------------

def test_part_from_upload_and_ranged_reads(blobs: Blobs) -> None:
    data = os.urandom(PART + 777)
    upload = uid(20)
    blobs.blob.create_upload(upload)
    blobs.declare(upload, len(data))
    blobs.blob.append_upload(upload, 0, chunks(data))
    sid = new_submission_id()
    digest = sha(data)
    assert blobs.blob.part_size(sid, digest) is None
    blobs.blob.put_part_from_upload(upload, sid, digest)
    blobs.blob.put_part_from_upload(upload, sid, digest)  # exists: left as it is
    assert blobs.blob.part_size(sid, digest) == len(data)
    whole = b"".join(blobs.blob.read_part(sid, digest))
    assert whole == data
    for start, end in [(PART - 3, PART + 3), (0, 10), (len(data) - 1, None), (4, 4)]:
        assert b"".join(blobs.blob.read_part(sid, digest, start, end)) == data[start:end]
    listed = [(s, h) for s, h, _ in blobs.blob.list_parts()]
    assert listed == [(sid, digest)]
    # The part outlives its upload (the sweep deletes consumed uploads).
    blobs.blob.delete_upload(upload)
    assert b"".join(blobs.blob.read_part(sid, digest, 0, 5)) == data[:5]
    blobs.blob.delete_part(sid, digest)
    blobs.blob.delete_part(sid, digest)
    assert blobs.blob.part_size(sid, digest) is None
    assert blobs.blob.list_parts() == []
    with pytest.raises(BlobMissing):
        b"".join(blobs.blob.read_part(sid, digest))


# -- public audio ------------------------------------------------------------------------------

def test_public_audio(blobs: Blobs) -> None:
    audio = os.urandom(300_000)
    digest = sha(audio)
    assert blobs.blob.public_audio_size("story-1", digest) is None
    with pytest.raises(ChecksumMismatch):
        blobs.blob.put_public_audio("story-1", digest, [audio[:-1], b"!"])
    assert blobs.blob.public_audio_size("story-1", digest) is None  # nothing stored
    assert blobs.blob.put_public_audio("story-1", digest, chunks(audio, 65536)) == len(audio)
    # Same key again: never overwritten, same size.
    assert blobs.blob.put_public_audio("story-1", digest, [audio]) == len(audio)
    assert blobs.blob.public_audio_size("story-1", digest) == len(audio)
    assert b"".join(blobs.blob.read_public_audio("story-1", digest)) == audio
    assert b"".join(blobs.blob.read_public_audio("story-1", digest, 100, 200)) == audio[100:200]
    with pytest.raises(BlobMissing):
        b"".join(blobs.blob.read_public_audio("story-2", digest))


# -- what only the S3 store promises -------------------------------------------------------

@pytest.fixture
def s3_blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Blobs]:
    made = open_s3(request, tmp_path)
    try:
        yield made
    finally:
        for thing in made.closers:
            thing.close()


def ledger(blobs: Blobs, upload_id: str) -> tuple[Any, list[tuple[int, int]], bytes | None]:
    """(upload_blobs row, [(number, size)] of recorded parts, tail) straight from SQL."""
    assert blobs.dsn is not None
    with psycopg.connect(blobs.dsn) as conn:
        row = conn.execute("SELECT size, completed FROM upload_blobs WHERE upload_id = %s",
                           (upload_id,)).fetchone()
        parts = [(int(n), int(s)) for n, s in conn.execute(
            "SELECT number, size FROM upload_blob_parts WHERE upload_id = %s ORDER BY number",
            (upload_id,))]
        tail = conn.execute("SELECT data FROM upload_tails WHERE upload_id = %s",
                            (upload_id,)).fetchone()
    return row, parts, None if tail is None else bytes(tail[0])


def multipart_uploads(blobs: Blobs) -> list[str]:
    assert blobs.endpoint is not None
    answer = blobs.endpoint.admin_client().list_multipart_uploads(Bucket=blobs.bucket)
    return [u["Key"] for u in answer.get("Uploads", [])]


def bucket_keys(blobs: Blobs) -> list[str]:
    assert blobs.endpoint is not None
    answer = blobs.endpoint.admin_client().list_objects_v2(Bucket=blobs.bucket)
    return sorted(item["Key"] for item in answer.get("Contents", []))


def test_s3_offset_and_ledger_move_together(s3_blobs: Blobs) -> None:
    data = os.urandom(2 * PART + 5000)
    upload = uid(30)
    s3_blobs.blob.create_upload(upload)
    s3_blobs.declare(upload, len(data))
    s3_blobs.blob.append_upload(upload, 0, chunks(data[:3 * MiB]))
    row, parts, tail = ledger(s3_blobs, upload)
    assert (row, parts, tail) == ((3 * MiB, False), [], data[:3 * MiB])
    got = s3_blobs.meta.get_upload(upload)
    assert got is not None and got.offset == 3 * MiB  # moved by the commit itself
    s3_blobs.blob.append_upload(upload, 3 * MiB, chunks(data[3 * MiB:9 * MiB]))
    row, parts, tail = ledger(s3_blobs, upload)
    assert (row, parts, tail) == ((9 * MiB, False), [(1, PART)], data[PART:9 * MiB])
    got = s3_blobs.meta.get_upload(upload)
    assert got is not None and got.offset == 9 * MiB
    # Never backwards: the caller's own (late) set_upload_offset of a smaller value.
    s3_blobs.meta.set_upload_offset(upload, 3 * MiB)
    got = s3_blobs.meta.get_upload(upload)
    assert got is not None and got.offset == 9 * MiB
    s3_blobs.blob.append_upload(upload, 9 * MiB, chunks(data[9 * MiB:]))
    row, parts, tail = ledger(s3_blobs, upload)
    assert row == (len(data), True)
    assert parts == [(1, PART), (2, PART), (3, 5000)]
    assert tail is None  # dropped in the transaction that recorded its part
    assert multipart_uploads(s3_blobs) == []
    assert bucket_keys(s3_blobs) == [f"central/uploads/{upload}"]


def test_s3_abort_uploads_and_records_nothing(s3_blobs: Blobs) -> None:
    upload = uid(31)
    s3_blobs.blob.create_upload(upload)
    s3_blobs.declare(upload, 30 * MiB)
    append = s3_blobs.blob.open_append(upload, 0)
    for piece in chunks(os.urandom(20 * MiB)):
        append.write(piece)
    append.abort()
    assert ledger(s3_blobs, upload) == ((0, False), [], None)
    got = s3_blobs.meta.get_upload(upload)
    assert got is not None and got.offset == 0
    assert s3_blobs.store.objects.list_parts(f"uploads/{upload}",
                                             _s3_id(s3_blobs, upload)) == []


def _s3_id(blobs: Blobs, upload_id: str) -> str:
    assert blobs.dsn is not None
    with psycopg.connect(blobs.dsn) as conn:
        row = conn.execute("SELECT s3_upload_id FROM upload_blobs WHERE upload_id = %s",
                           (upload_id,)).fetchone()
    assert row is not None
    return str(row[0])


def test_s3_refuses_what_a_multipart_upload_cannot_do(s3_blobs: Blobs) -> None:
    upload = uid(32)
    s3_blobs.blob.create_upload(upload)
    s3_blobs.declare(upload, 20 * MiB)
    s3_blobs.blob.append_upload(upload, 0, chunks(os.urandom(PART + 10)))
    # Not complete: S3 cannot read a multipart upload's parts.
    with pytest.raises(StorageError, match="not complete"):
        s3_blobs.read(upload)
    # The ledger never holds more than the offset, so it cannot be cut back.
    with pytest.raises(StorageError, match="current size"):
        s3_blobs.blob.truncate_upload(upload, 5)
    with pytest.raises(OffsetMismatch) as caught:
        s3_blobs.blob.open_append(upload, 5)
    assert caught.value.actual == PART + 10
    assert s3_blobs.blob.upload_size(upload) == PART + 10


def test_s3_part_with_wrong_sha256_is_refused(s3_blobs: Blobs) -> None:
    data = os.urandom(5000)
    upload = uid(33)
    s3_blobs.blob.create_upload(upload)
    s3_blobs.declare(upload, len(data))
    s3_blobs.blob.append_upload(upload, 0, [data])
    sid = new_submission_id()
    with pytest.raises(ChecksumMismatch):
        s3_blobs.blob.put_part_from_upload(upload, sid, sha(b"something else"))
    assert s3_blobs.blob.part_size(sid, sha(b"something else")) is None
    assert s3_blobs.blob.list_parts() == []


def test_s3_create_replaces_leftover_multipart(s3_blobs: Blobs) -> None:
    upload = uid(34)
    s3_blobs.blob.create_upload(upload)
    s3_blobs.blob.append_upload(upload, 0, chunks(os.urandom(PART + 1)))
    s3_blobs.blob.create_upload(upload)
    assert multipart_uploads(s3_blobs) == [f"central/uploads/{upload}"]  # one, not two
    assert ledger(s3_blobs, upload) == ((0, False), [], None)
    s3_blobs.blob.delete_upload(upload)
    assert multipart_uploads(s3_blobs) == []
    assert ledger(s3_blobs, upload) == (None, [], None)


def test_s3_store_refuses_to_open_without_ledger(s3_blobs: Blobs) -> None:
    assert s3_blobs.dsn is not None
    with psycopg.connect(s3_blobs.dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE upload_tails, upload_blob_parts, upload_blobs")
    with pytest.raises(StorageError, match="central init"):
        S3BlobStore(s3_blobs.store.objects, s3_blobs.dsn)


# -- choosing the store (sync/central/core.py) ---------------------------------------------

def _conf(data_dir: Path, lines: dict[str, str]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "central.conf").write_text(
        "".join(f"{key}={value}\n" for key, value in lines.items()), encoding="utf-8")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The environment wins over central.conf: none of these may leak in from outside.
    for key in ("CENTRAL_DATABASE_URL", "CENTRAL_S3_ENDPOINT", "CENTRAL_S3_BUCKET",
                "CENTRAL_S3_PREFIX", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(key, raising=False)


def _s3_lines(endpoint: S3Endpoint, bucket: str) -> dict[str, str]:
    return {"CENTRAL_S3_ENDPOINT": endpoint.endpoint_url, "CENTRAL_S3_BUCKET": bucket,
            "AWS_ACCESS_KEY_ID": endpoint.access_key_id,
            "AWS_SECRET_ACCESS_KEY": endpoint.secret_access_key,
            "AWS_DEFAULT_REGION": endpoint.region}


@pytest.mark.usefixtures("clean_env")
def test_core_default_is_files(tmp_path: Path) -> None:
    from sync.central import core

    core.init(tmp_path / "d")
    svc = core.Central(tmp_path / "d")
    try:
        assert isinstance(svc.blobs, FileBlobStore)
    finally:
        svc.close()


@pytest.mark.usefixtures("clean_env")
def test_core_s3_needs_postgres(tmp_path: Path, s3_endpoint: S3Endpoint,  # noqa: F811
                                s3_bucket: str) -> None:  # noqa: F811
    from sync.central import core

    _conf(tmp_path / "d", _s3_lines(s3_endpoint, s3_bucket))
    with pytest.raises(core.NotInitialised, match="CENTRAL_DATABASE_URL"):
        core.init(tmp_path / "d")
    _conf(tmp_path / "e", {"CENTRAL_S3_BUCKET": s3_bucket})
    with pytest.raises(core.NotInitialised, match="CENTRAL_S3_ENDPOINT"):
        core.open_blobs(tmp_path / "e", create=False)


@pytest.mark.usefixtures("clean_env")
def test_core_s3_init_makes_the_ledger_and_serve_uses_it(
        tmp_path: Path, s3_endpoint: S3Endpoint, s3_bucket: str,  # noqa: F811
        postgres_dsn: str) -> None:
    from sync.central import core

    data = tmp_path / "d"
    _conf(data, {"CENTRAL_DATABASE_URL": postgres_dsn, **_s3_lines(s3_endpoint, s3_bucket)})
    # Before init: the service refuses (no ledger), it does not make one.
    with pytest.raises(core.NotInitialised):
        core.open_blobs(data, create=False)
    core.init(data)
    with psycopg.connect(postgres_dsn) as conn:
        tables = {row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"upload_blobs", "upload_blob_parts", "upload_tails", "uploads"} <= tables
    svc = core.Central(data)
    try:
        assert isinstance(svc.blobs, S3BlobStore)
        svc.blobs.put_public_audio("s", sha(b"ogg"), [b"ogg"])
        assert s3_endpoint.admin_client().head_object(
            Bucket=s3_bucket, Key=f"public/s/{sha(b'ogg')}")["ContentLength"] == 3
    finally:
        svc.close()
    # A bucket that does not exist is a configuration error at start-up.
    _conf(data, {"CENTRAL_DATABASE_URL": postgres_dsn,
                 **_s3_lines(s3_endpoint, "no-such-bucket-here")})
    with pytest.raises(core.NotInitialised, match="no-such-bucket-here"):
        core.Central(data)


def test_s3_store_builds_a_bounded_number_of_parts_at_once(s3_blobs: Blobs,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """A part is built in memory before it goes to S3: with many uploads committing at
    once, only ``part_uploads`` parts are in flight per instance (memory stays bounded),
    and every upload still gets all its bytes."""
    import threading
    import time as clock

    from sync.central.storage.s3_blobs import PART

    store = s3_blobs.store
    store._part_slots = threading.BoundedSemaphore(2)  # as part_uploads=2 would
    real = store.objects.upload_part
    now = [0]
    peak = [0]
    guard = threading.Lock()

    def counting(*args: Any, **kwargs: Any) -> Any:
        with guard:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        try:
            clock.sleep(0.05)  # long enough for the others to pile up
            return real(*args, **kwargs)
        finally:
            with guard:
                now[0] -= 1

    monkeypatch.setattr(store.objects, "upload_part", counting)
    data = {f"{i:032x}": bytes([i]) * (PART + 10) for i in range(6)}
    for upload_id, body in data.items():
        s3_blobs.blob.create_upload(upload_id)
        s3_blobs.declare(upload_id, len(body) + 1)  # one byte short of complete
    threads = [threading.Thread(target=s3_blobs.blob.append_upload,
                                args=(upload_id, 0, [body]))
               for upload_id, body in data.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert peak[0] == 2
    for upload_id, body in data.items():
        assert s3_blobs.blob.upload_size(upload_id) == len(body)
        assert ledger(s3_blobs, upload_id)[1] == [(1, PART)]
