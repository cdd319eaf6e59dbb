"""The S3 object layer (sync/central/storage/s3_objects.py) against moto's real HTTP
server on loopback (tests/harness/s3.py): every call below is an HTTP request.

Parts are S3's real 5 MiB minimum: the harness refuses a lowered
``S3_UPLOAD_PART_MIN_SIZE``, and one test shows moto enforcing it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time

import pytest

from sync.central.storage.base import BlobMissing, ChecksumMismatch, StorageError
from sync.central.storage.s3_objects import (
    MIN_PART_SIZE,
    READ_SIZE,
    SPOOL_IN_MEMORY,
    PartReceipt,
    S3Objects,
    S3Settings,
    StorageUnavailable,
)
from tests.harness.s3 import (  # noqa: F401  (fixtures)
    S3Endpoint,
    black_hole,
    s3_bucket,
    s3_endpoint,
    start_moto,
)

PREFIX = "central"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def read(objects: S3Objects, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(objects.get_object(key, start, end))


def settings_for(endpoint: S3Endpoint, bucket: str, **overrides: object) -> S3Settings:
    values: dict[str, object] = {
        "endpoint_url": endpoint.endpoint_url, "bucket": bucket,
        "access_key_id": endpoint.access_key_id,
        "secret_access_key": endpoint.secret_access_key, "region": endpoint.region,
        "prefix": PREFIX}
    values.update(overrides)
    return S3Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def objects(s3_endpoint: S3Endpoint, s3_bucket: str) -> S3Objects:  # noqa: F811
    store = S3Objects(settings_for(s3_endpoint, s3_bucket))
    store.check_bucket()
    return store


def bucket_keys(endpoint: S3Endpoint, bucket: str) -> list[str]:
    """Every key in the bucket, seen by a separate plain client."""
    answer = endpoint.admin_client().list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in answer.get("Contents", []))


# -- whole objects ---------------------------------------------------------------------
def test_put_then_ranged_reads_round_trip(objects: S3Objects) -> None:
    data = os.urandom(2 * READ_SIZE + 12345)  # spans several chunks of the iterator
    assert objects.put_object("uploads/a", data, sha(data)) is True
    assert read(objects, "uploads/a") == data
    assert read(objects, "uploads/a", 0, 10) == data[:10]
    assert read(objects, "uploads/a", 100, READ_SIZE + 5) == data[100:READ_SIZE + 5]
    assert read(objects, "uploads/a", len(data) - 3) == data[-3:]
    assert read(objects, "uploads/a", 7, 7) == b""  # empty range: no request S3 refuses
    assert read(objects, "uploads/a", len(data) + 10) == b""  # past the end, as a file
    assert read(objects, "uploads/a", 5, len(data) + 99) == data[5:]
    info = objects.head("uploads/a")
    assert info is not None and info.size == len(data) == objects.size("uploads/a")
    assert info.sha256_b64 == b64sha(data)


def test_put_from_chunks_larger_than_the_memory_spool(objects: S3Objects) -> None:
    chunks = [os.urandom(1024 * 1024) for _ in range(SPOOL_IN_MEMORY // (1024 * 1024) + 1)]
    whole = b"".join(chunks)
    assert objects.put_object("public/story/x.ogg", iter(chunks), sha(whole))
    assert read(objects, "public/story/x.ogg") == whole


@pytest.mark.parametrize("as_chunks", [False, True])
def test_wrong_sha256_stores_nothing(objects: S3Objects, as_chunks: bool) -> None:
    data = os.urandom(70_000)
    body = iter([data[:1000], data[1000:]]) if as_chunks else data
    with pytest.raises(ChecksumMismatch):
        objects.put_object("parts/p", body, sha(data + b"!"))
    assert objects.head("parts/p") is None
    # An object already there is not touched by a refused write.
    objects.put_object("parts/q", b"old", sha(b"old"))
    with pytest.raises(ChecksumMismatch):
        objects.put_object("parts/q", data, sha(b"something else"))
    assert read(objects, "parts/q") == b"old"


def test_if_absent_never_overwrites(objects: S3Objects) -> None:
    assert objects.put_object("public/s/a.ogg", b"first", sha(b"first"), if_absent=True)
    assert not objects.put_object("public/s/a.ogg", b"second", sha(b"second"),
                                  if_absent=True)
    assert read(objects, "public/s/a.ogg") == b"first"


def test_missing_objects(objects: S3Objects) -> None:
    assert objects.head("nope") is None
    assert objects.size("nope") is None
    for start, end in [(0, None), (5, 10), (3, 3)]:
        with pytest.raises(BlobMissing):
            objects.get_object("nope", start, end)


def test_delete_is_idempotent(objects: S3Objects) -> None:
    objects.put_object("uploads/d", b"bytes", sha(b"bytes"))
    objects.delete("uploads/d")
    assert objects.head("uploads/d") is None
    objects.delete("uploads/d")  # already gone: no error
    objects.delete("never/was")


def test_server_side_copy(objects: S3Objects) -> None:
    data = os.urandom(300_000)
    objects.put_object("uploads/u1", data, sha(data))
    info = objects.copy("uploads/u1", "parts/sub/abc", expect_sha256=sha(data))
    assert info.size == len(data) and info.sha256_b64 == b64sha(data)
    assert read(objects, "parts/sub/abc") == data
    with pytest.raises(ChecksumMismatch):
        objects.copy("uploads/u1", "parts/sub/wrong", expect_sha256=sha(b"other"))
    assert objects.head("parts/sub/wrong") is None  # the refused copy was removed
    with pytest.raises(BlobMissing):
        objects.copy("uploads/missing", "parts/sub/x")


def test_list_objects_stays_in_prefix(objects: S3Objects, s3_endpoint: S3Endpoint,  # noqa: F811
                                      s3_bucket: str) -> None:  # noqa: F811
    for key in ("parts/s1/a", "parts/s2/b", "uploads/u"):
        objects.put_object(key, key.encode(), sha(key.encode()))
    other = S3Objects(settings_for(s3_endpoint, s3_bucket, prefix="other"))
    other.put_object("parts/s9/z", b"z", sha(b"z"))
    assert sorted(i.key for i in objects.list_objects("parts")) == ["parts/s1/a",
                                                                     "parts/s2/b"]
    assert len(list(objects.list_objects())) == 3


# -- keys --------------------------------------------------------------------------------
BAD_KEYS = ["", "/abs", "a/../b", "..", ".", "../x", "a/..", "a//b", "a/", "a\\b",
            "a b", "ü", "./a", "-dash-first", "x" * 600, "a/.hidden"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_never_escape_the_prefix(objects: S3Objects, s3_endpoint: S3Endpoint,  # noqa: F811
                                      s3_bucket: str, key: str) -> None:  # noqa: F811
    calls = [
        lambda: objects.put_object(key, b"x", sha(b"x")),
        lambda: objects.get_object(key),
        lambda: objects.head(key),
        lambda: objects.delete(key),
        lambda: objects.copy("ok", key),
        lambda: objects.copy(key, "ok"),
        lambda: objects.create_multipart(key),
        lambda: objects.upload_part(key, "id", 1, b"x", sha(b"x")),
        lambda: objects.abort_multipart(key, "id"),
        lambda: objects.list_parts(key, "id"),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="not a valid object"):
            call()
    assert bucket_keys(s3_endpoint, s3_bucket) == []


def test_good_keys_land_under_the_prefix(objects: S3Objects, s3_endpoint: S3Endpoint,  # noqa: F811
                                         s3_bucket: str) -> None:  # noqa: F811
    objects.put_object("parts/0190-ab/" + "f" * 64, b"x", sha(b"x"))
    assert bucket_keys(s3_endpoint, s3_bucket) == [f"{PREFIX}/parts/0190-ab/{'f' * 64}"]


@pytest.mark.parametrize("prefix", ["/root", "a/../b", "..", "a/"])
def test_bad_prefix_refused(s3_endpoint: S3Endpoint, prefix: str) -> None:  # noqa: F811
    with pytest.raises(StorageError):
        S3Objects(settings_for(s3_endpoint, "any-bucket", prefix=prefix))


def test_missing_bucket_is_a_configuration_error(s3_endpoint: S3Endpoint) -> None:  # noqa: F811
    store = S3Objects(settings_for(s3_endpoint, "no-such-bucket-here"))
    with pytest.raises(StorageError) as caught:
        store.check_bucket()
    assert not isinstance(caught.value, BlobMissing)


# -- multipart -------------------------------------------------------------------------
def upload_parts(objects: S3Objects, key: str, blobs: list[bytes]) -> tuple[str,
                                                                             list[PartReceipt]]:
    upload_id = objects.create_multipart(key)
    receipts = [objects.upload_part(key, upload_id, number, blob, sha(blob))
                for number, blob in enumerate(blobs, start=1)]
    return upload_id, receipts


def test_multipart_real_minimum_parts_round_trip(objects: S3Objects) -> None:
    blobs = [os.urandom(MIN_PART_SIZE), os.urandom(MIN_PART_SIZE), os.urandom(1234)]
    whole = b"".join(blobs)
    upload_id, receipts = upload_parts(objects, "uploads/mp", blobs)
    assert objects.head("uploads/mp") is None  # invisible until completed
    # Given out of order on purpose: completion sorts by part number.
    info = objects.complete_multipart("uploads/mp", upload_id, receipts[::-1])
    assert info.size == len(whole)
    composite = hashlib.sha256(b"".join(hashlib.sha256(b).digest() for b in blobs))
    assert info.sha256_b64 == base64.b64encode(composite.digest()).decode()
    assert read(objects, "uploads/mp") == whole
    assert read(objects, "uploads/mp", MIN_PART_SIZE - 3, MIN_PART_SIZE + 3) == \
        whole[MIN_PART_SIZE - 3:MIN_PART_SIZE + 3]
    # Moving the finished upload to its part key: the store computes the real SHA-256.
    moved = objects.copy("uploads/mp", "parts/s/" + sha(whole), expect_sha256=sha(whole))
    assert moved.sha256_b64 == b64sha(whole)
    assert read(objects, "parts/s/" + sha(whole)) == whole


def test_complete_retried_after_success(objects: S3Objects) -> None:
    blobs = [os.urandom(MIN_PART_SIZE), b"tail"]
    upload_id, receipts = upload_parts(objects, "uploads/r", blobs)
    first = objects.complete_multipart("uploads/r", upload_id, receipts)
    # The same call again (a retry after a lost answer).
    assert objects.complete_multipart("uploads/r", upload_id, receipts) == first
    # S3 forgets a completed upload id after a while: a retry then gets NoSuchUpload
    # (moto: 500). An id moto never knew gives that answer, and the object is checked.
    assert objects.complete_multipart("uploads/r", "forgotten-upload-id", receipts) == first
    # But not if the object there is not these parts.
    with pytest.raises(BlobMissing):
        objects.complete_multipart("uploads/r", "forgotten-upload-id", receipts[:1])
    other = PartReceipt(number=2, etag=receipts[1].etag, sha256=sha(b"tall"), size=4)
    with pytest.raises(BlobMissing):
        objects.complete_multipart("uploads/r", "forgotten-upload-id", [receipts[0], other])
    assert read(objects, "uploads/r") == b"".join(blobs)


def test_part_below_the_real_minimum_is_refused_at_completion(objects: S3Objects) -> None:
    blobs = [os.urandom(MIN_PART_SIZE - 1), b"last"]
    upload_id, receipts = upload_parts(objects, "uploads/small", blobs)
    with pytest.raises(StorageError) as caught:
        objects.complete_multipart("uploads/small", upload_id, receipts)
    assert not isinstance(caught.value, BlobMissing)
    assert "EntityTooSmall" in str(caught.value)
    assert objects.head("uploads/small") is None


def test_part_with_wrong_sha256_is_not_sent(objects: S3Objects) -> None:
    upload_id = objects.create_multipart("uploads/w")
    with pytest.raises(ChecksumMismatch):
        objects.upload_part("uploads/w", upload_id, 1, b"abc", sha(b"abd"))
    assert objects.list_parts("uploads/w", upload_id) == []


def test_abort(objects: S3Objects) -> None:
    blob = os.urandom(MIN_PART_SIZE)
    upload_id, receipts = upload_parts(objects, "uploads/ab", [blob])
    objects.abort_multipart("uploads/ab", upload_id)
    objects.abort_multipart("uploads/ab", upload_id)  # again: no error
    # moto answers 500 here (S3: NoSuchUpload); both must read as "no such upload".
    with pytest.raises(BlobMissing):
        objects.upload_part("uploads/ab", upload_id, 2, b"late", sha(b"late"))
    with pytest.raises(BlobMissing):
        objects.complete_multipart("uploads/ab", upload_id, receipts)
    with pytest.raises(BlobMissing):
        objects.list_parts("uploads/ab", upload_id)
    assert objects.head("uploads/ab") is None


def test_list_parts_with_gaps_is_diagnostic(objects: S3Objects) -> None:
    upload_id = objects.create_multipart("uploads/gaps")
    for number in (1, 3, 5):
        objects.upload_part("uploads/gaps", upload_id, number, b"p%d" % number,
                            sha(b"p%d" % number))
    # moto's marker-as-index would lose parts 3 and 5 if this paged by marker.
    assert [n for n, _size, _etag in objects.list_parts("uploads/gaps", upload_id)] == \
        [1, 3, 5]


# -- an endpoint that stops answering ------------------------------------------------------
def test_stopped_endpoint_gives_a_clear_error_at_once() -> None:
    endpoint = start_moto()
    endpoint.admin_client().create_bucket(Bucket="doomed")
    store = S3Objects(settings_for(endpoint, "doomed", connect_timeout=0.5,
                                   read_timeout=1.0, max_attempts=2))
    store.put_object("k", b"v", sha(b"v"))
    endpoint.server.stop()  # closes the socket: connections are refused
    for call in (lambda: store.head("k"), lambda: store.put_object("k2", b"v", sha(b"v")),
                 lambda: read(store, "k"), lambda: store.create_multipart("m")):
        began = time.monotonic()
        with pytest.raises(StorageUnavailable, match="unreachable"):
            call()
        # A refusal is immediate; 2 attempts with at most 0.05 s of backoff between.
        assert time.monotonic() - began < 1.0


def test_hung_endpoint_times_out_within_the_configured_bound() -> None:
    with black_hole() as url:
        store = S3Objects(S3Settings(endpoint_url=url, bucket="hung", access_key_id="a",
                                     secret_access_key="b", connect_timeout=0.5,
                                     read_timeout=1.0, max_attempts=2))
        began = time.monotonic()
        with pytest.raises(StorageUnavailable, match="unreachable"):
            store.head("k")
        took = time.monotonic() - began
    # Exactly 2 requests of a 1 s read timeout each (a third, as botocore's
    # "max_attempts" would make, takes it past 3 s), backoff of at most 0.05 s; and it
    # did wait for the read timeout (not a refusal in disguise).
    assert 2.0 <= took < 2.9


def test_moto_starts_quickly_at_the_real_minimum(s3_endpoint: S3Endpoint) -> None:  # noqa: F811
    from moto.s3 import models

    assert models.S3_UPLOAD_PART_MIN_SIZE == MIN_PART_SIZE
    assert s3_endpoint.startup_seconds < 5.0
