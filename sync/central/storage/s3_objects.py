"""The S3 object layer under the S3 blob store (issue 14): the only module that talks S3.

A small typed wrapper over one boto3 S3 client, one bucket and one key prefix. It offers
exactly what the blob store needs (whole objects, ranged reads, server-side copy and
multipart uploads) and turns every S3 or network failure into the storage errors of
:mod:`.base`, plus :class:`StorageUnavailable` when the endpoint cannot be reached.

Consistency: S3 (since December 2020), MinIO and Garage give strong read-after-write
consistency for PUT, GET, HEAD and DELETE of one key; listing is strongly consistent on
AWS but not on every S3-compatible store, so nothing here uses a listing to decide an
upload's offset (the design keeps offsets and the list of stored parts in PostgreSQL).
``list_parts`` and ``list_objects`` exist for diagnostics and sweeps only.

Durability: a write is durable once S3 has answered 200 (S3 stores the object redundantly
before it answers; a single-node MinIO or Garage is as durable as its disks' sync
settings). Nothing is durable before that answer: a write whose answer was lost may or
may not have happened, so every write here is safe to repeat.

Checksums: every body sent carries its SHA-256 (``x-amz-checksum-sha256``) and its MD5
(``Content-MD5``) so that a store refuses bytes damaged on the way. moto 5.2 checks
neither (it stores the claimed value, see ``_get_checksum`` in moto/s3/responses.py:
"TODO: AWS computes the provided value and verifies it"), so the bytes are also hashed
here, before anything is sent, against the SHA-256 the caller declared: a wrong SHA-256
stores nothing on any store.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from .base import BlobMissing, ChecksumMismatch, StorageError, StorageUnavailable

#: Bytes per chunk yielded by :meth:`S3Objects.get_object` (as file_blobs.READ_SIZE).
READ_SIZE = 1024 * 1024
#: S3's minimum size of every part but the last (EntityTooSmall at completion).
MIN_PART_SIZE = 5 * 1024 * 1024
#: S3's limits: part numbers 1..10000, a single PUT or CopyObject at most 5 GiB.
MAX_PART_NUMBER = 10_000
MAX_SINGLE_OBJECT = 5 * 1024**3
#: Bodies given as an iterable are spooled (memory up to this, then a temporary file)
#: because S3 needs the length and the checksum headers before the body.
SPOOL_IN_MEMORY = 8 * 1024 * 1024

# A key (and the prefix) is "/"-separated segments of letters, digits, '.', '_' and '-',
# each starting with a letter or digit: so no empty segment, no leading '/', and no
# '.' or '..' segment can take a key out of the prefix (S3 itself treats '..' as plain
# characters, but proxies and S3-compatible stores on file systems may not).
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_KEY = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_KEY_LENGTH = 512

_MISSING_CODES = {"NoSuchKey", "NotFound", "404", "NoSuchUpload"}
_CHECKSUM_CODES = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch",
                   "InvalidChecksum"}


@dataclass(frozen=True)
class S3Settings:
    """Where the objects live and how long to wait for the store.

    The timeouts and attempts are explicit (not botocore's defaults of 60 s per read
    and a retry mode that depends on ~/.aws/config) so that a dead endpoint costs a
    request a bounded time: at most about ``max_attempts * (connect_timeout +
    read_timeout)`` plus backoff, which in botocore's standard mode is at most
    0.05 s x 2^n between attempts for errors other than throttling (1 s x 2^n for those).
    """

    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"
    prefix: str = ""
    connect_timeout: float = 2.0
    # Long enough for the store to take in and acknowledge a part of a few MiB.
    read_timeout: float = 20.0
    # Requests in all, the first included. Standard mode retries throttling, 5xx,
    # timeouts and connection errors; 3 attempts ride out
    # a store restart of a second or two without holding a kiosk's request for long.
    max_attempts: int = 3
    # Path style (http://host/bucket/key) works with MinIO, Garage and moto on an IP
    # address, where virtual-host style would need DNS for bucket.host.
    addressing_style: str = "path"


@dataclass(frozen=True)
class ObjectInfo:
    """What HEAD says of one object. ``sha256_b64`` is the store's SHA-256 checksum
    (base64; for a multipart object the composite "checksum of part checksums",
    without the "-N" suffix), or None if the store keeps none."""

    key: str
    size: int
    etag: str
    sha256_b64: str | None
    last_modified: float


@dataclass(frozen=True)
class PartReceipt:
    """One stored part of a multipart upload: what completion needs, to be kept by the
    caller (the upload ledger in PostgreSQL), never recovered by listing."""

    number: int
    etag: str
    sha256: str  # hex
    size: int


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _check_sha256(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
        raise StorageError("not a SHA-256 in lower-case hex")
    return sha256


def validate_key(key: str, what: str = "key") -> str:
    """``key`` if it is a safe object key (see ``_KEY``), else :class:`StorageError`."""
    if not isinstance(key, str) or len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise StorageError(f"not a valid object {what}")
    return key


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _translate(error: Exception, what: str) -> StorageError:
    """The storage error for a boto3/botocore exception (``what`` names the object)."""
    if isinstance(error, ClientError):
        code = _code(error)
        if code in _MISSING_CODES:
            return BlobMissing(f"{what}: no such object or upload ({code})")
        if code in _CHECKSUM_CODES:
            return ChecksumMismatch(f"{what}: the store refused the body ({code})")
        status = _status(error)
        if status >= 500 or code in {"SlowDown", "ServiceUnavailable"}:
            return StorageUnavailable(f"{what}: the store failed ({code or status})")
        return StorageError(f"{what}: {code or status}")
    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
                          ConnectionClosedError, ResponseStreamingError,
                          IncompleteReadError)):
        return StorageUnavailable(f"{what}: object store unreachable ({type(error).__name__})")
    if isinstance(error, BotoCoreError):
        return StorageError(f"{what}: {type(error).__name__}")
    raise TypeError("not a botocore error") from error


@contextlib.contextmanager
def _mapped(what: str) -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise _translate(error, what) from error


def make_client(settings: S3Settings) -> Any:
    """A boto3 S3 client for ``settings`` (thread-safe; one per process is enough)."""
    config = Config(
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        # total_max_attempts counts the first request; botocore's "max_attempts" here
        # would count only the retries (one more request than intended).
        retries={"total_max_attempts": settings.max_attempts, "mode": "standard"},
        s3={"addressing_style": settings.addressing_style},
        # botocore >= 1.36 otherwise adds its own CRC32 as an aws-chunked trailer to
        # every upload, which several S3-compatible stores refuse; we send SHA-256 and
        # MD5 headers ourselves instead.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    # Explicit credentials: nothing is taken from ~/.aws or an instance profile by
    # accident (the service's configuration names them, issue 14).
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint_url,
        aws_access_key_id=settings.access_key_id,
        aws_secret_access_key=settings.secret_access_key,
        region_name=settings.region,
        config=config,
    )


class S3Objects:
    """Objects under ``settings.prefix`` in one bucket. Every key is relative to the
    prefix and validated, so no key reaches outside it. Thread-safe (boto3 clients are)."""

    def __init__(self, settings: S3Settings, client: Any | None = None) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = validate_key(settings.prefix, "prefix") + "/" if settings.prefix else ""
        self.client = client if client is not None else make_client(settings)

    def check_bucket(self) -> None:
        """Raise :class:`StorageError` unless the bucket exists and answers. Call at
        start-up: HEAD of a key in a missing bucket is a bare 404, which would
        otherwise look like "no such object" and hide a wrong configuration."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if _status(error) >= 500:
                raise _translate(error, "bucket " + self.bucket) from error
            # Not BlobMissing: a missing bucket is a configuration error, not a blob.
            raise StorageError(f"bucket {self.bucket}: missing or forbidden "
                               f"({_code(error) or _status(error)})") from error
        except BotoCoreError as error:
            raise _translate(error, "bucket " + self.bucket) from error

    def full_key(self, key: str) -> str:
        """The bucket key of ``key`` (the prefix, then the validated key)."""
        return self.prefix + validate_key(key)

    # -- whole objects -------------------------------------------------------------------
    def put_object(self, key: str, body: bytes | Iterable[bytes], sha256: str, *,
                   if_absent: bool = False) -> bool:
        """Store ``body`` under ``key`` if it hashes to ``sha256``; True if written.

        Durable when it returns; atomic (readers see the old object or the whole new
        one, never a part). The bytes are hashed first and :class:`ChecksumMismatch`
        raised before anything is sent if they do not match; the store is then given
        the SHA-256 and MD5 so it refuses bytes damaged in transit (moto does not).
        ``if_absent`` sends ``If-None-Match: *``: an existing object is left as it is
        and False returned (S3 since 2024, MinIO and moto 5.2 honour it; a store that
        ignores the header would overwrite, which for content-addressed keys writes the
        same bytes). At most 5 GiB (S3's single PUT limit).
        """
        _check_sha256(sha256)
        name = self.full_key(key)
        spool: IO[bytes] | None = None
        try:
            if isinstance(body, (bytes, bytearray, memoryview)):
                data: bytes | IO[bytes] = bytes(body)
                digest = hashlib.sha256(data).hexdigest()
                md5 = hashlib.md5(data, usedforsecurity=False).digest()
                size = len(data)
            else:
                spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
                hasher, md5_hasher, size = hashlib.sha256(), hashlib.md5(
                    usedforsecurity=False), 0
                for chunk in body:
                    hasher.update(chunk)
                    md5_hasher.update(chunk)
                    spool.write(chunk)
                    size += len(chunk)
                spool.seek(0)
                data, digest, md5 = spool, hasher.hexdigest(), md5_hasher.digest()
            if digest != sha256:
                raise ChecksumMismatch("the body does not hash to the SHA-256 given")
            if size > MAX_SINGLE_OBJECT:
                raise StorageError("object larger than a single PUT allows")
            extra: dict[str, str] = {"IfNoneMatch": "*"} if if_absent else {}
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=name, Body=data, ContentLength=size,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=_b64(bytes.fromhex(sha256)),
                    ContentMD5=_b64(md5), **extra)
            except ClientError as error:
                # 412: If-None-Match found an object. 409 ConditionalRequestConflict:
                # a concurrent writer of the same key won; either way it exists.
                if if_absent and _code(error) in {"PreconditionFailed",
                                                  "ConditionalRequestConflict"}:
                    return False
                raise _translate(error, "put " + key) from error
            except BotoCoreError as error:
                raise _translate(error, "put " + key) from error
            return True
        finally:
            if spool is not None:
                spool.close()

    def head(self, key: str) -> ObjectInfo | None:
        """Size, ETag and stored SHA-256 of ``key``, or None if absent (strongly
        consistent with a write that has returned)."""
        name = self.full_key(key)
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=name,
                                             ChecksumMode="ENABLED")
        except ClientError as error:
            if _code(error) in _MISSING_CODES:
                return None
            raise _translate(error, "head " + key) from error
        except BotoCoreError as error:
            raise _translate(error, "head " + key) from error
        checksum = answer.get("ChecksumSHA256")
        return ObjectInfo(
            key=key, size=int(answer["ContentLength"]), etag=str(answer["ETag"]),
            # S3 writes a multipart object's composite checksum as "<b64>-<parts>".
            sha256_b64=checksum.split("-")[0] if checksum else None,
            last_modified=answer["LastModified"].timestamp())

    def size(self, key: str) -> int | None:
        info = self.head(key)
        return None if info is None else info.size

    def get_object(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes ``[start, end)`` of ``key`` as an iterator of chunks.

        The request is made now, so :class:`BlobMissing` is raised by this call, not by
        the first ``next``. A range past the end gives no bytes (as a file would). A
        connection lost mid-body raises :class:`StorageUnavailable` from the iterator;
        a short body is never passed off as the whole (botocore checks the length).
        """
        if start < 0 or (end is not None and end < start):
            raise StorageError("bad byte range")
        name = self.full_key(key)
        if end is not None and end == start:
            # S3 cannot express an empty range; still say whether the object exists.
            if self.head(key) is None:
                raise BlobMissing(f"get {key}: no such object")
            return iter(())
        extra: dict[str, str] = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-" + ("" if end is None else str(end - 1))
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=name, **extra)
        except ClientError as error:
            if _code(error) == "InvalidRange":
                return iter(())  # 416: the object exists and is shorter than ``start``
            raise _translate(error, "get " + key) from error
        except BotoCoreError as error:
            raise _translate(error, "get " + key) from error
        return self._stream(answer["Body"], key)

    @staticmethod
    def _stream(body: Any, key: str) -> Iterator[bytes]:
        try:
            with _mapped("read " + key):
                yield from body.iter_chunks(READ_SIZE)
        finally:
            body.close()

    def delete(self, key: str) -> None:
        """Delete ``key``; no error if it is already gone (S3 answers 204 either way).
        Durable when it returns."""
        name = self.full_key(key)
        with _mapped("delete " + key):
            self.client.delete_object(Bucket=self.bucket, Key=name)

    def copy(self, source: str, target: str, expect_sha256: str | None = None) -> ObjectInfo:
        """Server-side copy of ``source`` to ``target`` (no bytes pass through here).

        Durable and atomic like a PUT; an existing ``target`` is replaced (targets are
        content-addressed, so it held the same bytes). The store is asked to compute a
        full-object SHA-256 of the copy (``x-amz-checksum-algorithm``), which turns a
        multipart upload's composite checksum into the part's real SHA-256. If
        ``expect_sha256`` is given and the store reports a different one, the copy is
        deleted and :class:`ChecksumMismatch` raised; if the store reports none, the
        returned ``sha256_b64`` is None and the caller must hash the bytes itself.
        At most 5 GiB (S3's CopyObject limit; UploadPartCopy would be needed above).
        """
        if expect_sha256 is not None:
            _check_sha256(expect_sha256)
        src, dst = self.full_key(source), self.full_key(target)
        with _mapped(f"copy {source} to {target}"):
            answer = self.client.copy_object(
                Bucket=self.bucket, Key=dst, CopySource={"Bucket": self.bucket, "Key": src},
                ChecksumAlgorithm="SHA256")
        result = answer.get("CopyObjectResult", {})
        checksum = result.get("ChecksumSHA256")
        if expect_sha256 is not None and checksum is not None and \
                checksum.split("-")[0] != _b64(bytes.fromhex(expect_sha256)):
            self.delete(target)
            raise ChecksumMismatch(f"copy of {source} does not hash to the SHA-256 given")
        info = self.head(target)
        if info is None:  # not after a 200 on a strongly consistent store
            raise StorageError(f"copy of {source} vanished")
        return info

    def list_objects(self, sub_prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under the prefix (and ``sub_prefix``), for sweeps only: listing
        is not strongly consistent on every S3-compatible store, so no offset and no
        "is it stored" decision may rest on it. ``sha256_b64`` is None here."""
        base = self.prefix + (validate_key(sub_prefix, "prefix") + "/" if sub_prefix else "")
        token: dict[str, str] = {}
        while True:
            with _mapped("list " + (sub_prefix or "/")):
                page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=base, **token)
            for item in page.get("Contents", []):
                yield ObjectInfo(key=item["Key"][len(self.prefix):], size=int(item["Size"]),
                                 etag=str(item["ETag"]), sha256_b64=None,
                                 last_modified=item["LastModified"].timestamp())
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    # -- multipart uploads ---------------------------------------------------------------
    def create_multipart(self, key: str) -> str:
        """Start a multipart upload to ``key`` with SHA-256 part checksums; its id.

        Durable when it returns. The upload is invisible to readers of ``key`` until
        completed; an upload never completed costs storage until aborted (a sweep, or
        a bucket lifecycle rule, must abort abandoned ones).
        """
        name = self.full_key(key)
        with _mapped("create upload " + key):
            answer = self.client.create_multipart_upload(Bucket=self.bucket, Key=name,
                                                         ChecksumAlgorithm="SHA256")
        return str(answer["UploadId"])

    def upload_part(self, key: str, upload_id: str, number: int, body: bytes,
                    sha256: str) -> PartReceipt:
        """Store part ``number`` (1..10000) of the upload if ``body`` hashes to ``sha256``.

        Durable when it returns; repeating a part number replaces that part (so a retry
        after a lost answer is safe). Every part but the last must be at least 5 MiB,
        which S3 checks only at completion. :class:`ChecksumMismatch` before sending if
        the body does not match; :class:`BlobMissing` if the upload was aborted or
        completed.
        """
        _check_sha256(sha256)
        if not 1 <= number <= MAX_PART_NUMBER:
            raise StorageError("part number out of range")
        if hashlib.sha256(body).hexdigest() != sha256:
            raise ChecksumMismatch("the part does not hash to the SHA-256 given")
        name = self.full_key(key)
        try:
            answer = self.client.upload_part(
                Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number,
                Body=body, ContentLength=len(body), ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64(bytes.fromhex(sha256)),
                ContentMD5=_b64(hashlib.md5(body, usedforsecurity=False).digest()))
        except ClientError as error:
            # moto difference: UploadPart to an aborted (or unknown) upload answers 500
            # (a KeyError inside moto) instead of 404 NoSuchUpload. A 500 from a real
            # store may be transient too, so ask whether the upload still exists.
            if _status(error) >= 500 and not self._upload_exists(key, upload_id):
                raise BlobMissing(f"upload part {key}: no such upload") from error
            raise _translate(error, "upload part " + key) from error
        except BotoCoreError as error:
            raise _translate(error, "upload part " + key) from error
        return PartReceipt(number=number, etag=str(answer["ETag"]), sha256=sha256,
                           size=len(body))

    def complete_multipart(self, key: str, upload_id: str,
                           parts: Sequence[PartReceipt]) -> ObjectInfo:
        """Assemble ``parts`` (in part-number order) into the object ``key``.

        Durable and atomic when it returns: readers see no object, then the whole one.
        Idempotent: if the upload is gone (a retry after an answer that was lost, so the
        first call did complete it), the object at ``key`` is checked against these
        parts (its composite SHA-256, or failing that its multipart ETag) and returned;
        only if it does not match is :class:`BlobMissing` raised. A part below 5 MiB
        that is not the last gives :class:`StorageError` (EntityTooSmall).
        """
        if not parts:
            raise StorageError("an upload needs at least one part")
        ordered = sorted(parts, key=lambda part: part.number)
        if len({part.number for part in ordered}) != len(ordered):
            raise StorageError("a part number given twice")
        # S3 may answer 200 and put an error in the body of CompleteMultipartUpload
        # (and CopyObject); botocore turns that into a ClientError, handled below.
        name = self.full_key(key)
        listed = [{"PartNumber": part.number, "ETag": part.etag,
                   "ChecksumSHA256": _b64(bytes.fromhex(part.sha256))} for part in ordered]
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id,
                MultipartUpload={"Parts": listed})
        except ClientError as error:
            # NoSuchUpload: completed before (or aborted). moto difference: completing
            # an unknown or aborted upload answers 500 rather than NoSuchUpload.
            if _code(error) == "NoSuchUpload" or _status(error) >= 500:
                done = self._completed_as(key, ordered)
                if done is not None:
                    return done
                if _code(error) == "NoSuchUpload" or not self._upload_exists(key, upload_id):
                    raise BlobMissing(f"complete {key}: no such upload, and the object "
                                      "there is not these parts") from error
            raise _translate(error, "complete " + key) from error
        except BotoCoreError as error:
            # The answer was lost (read timeout, connection reset): it may have worked.
            done = self._completed_as(key, ordered)
            if done is not None:
                return done
            raise _translate(error, "complete " + key) from error
        info = self._completed_as(key, ordered)
        if info is None:
            raise StorageError(f"complete {key}: the object is not the parts sent")
        return info

    def _completed_as(self, key: str, parts: Sequence[PartReceipt]) -> ObjectInfo | None:
        """The object at ``key`` if it is exactly ``parts`` assembled, else None."""
        info = self.head(key)
        if info is None or info.size != sum(part.size for part in parts):
            return None
        if info.sha256_b64 is not None:
            composite = hashlib.sha256(b"".join(bytes.fromhex(p.sha256) for p in parts))
            return info if info.sha256_b64 == _b64(composite.digest()) else None
        # A store without checksums: the multipart ETag, MD5 of the parts' MD5s plus
        # "-<count>" (S3, MinIO and moto without SSE-KMS; part ETags are their MD5).
        try:
            md5s = b"".join(bytes.fromhex(p.etag.strip('"')) for p in parts)
        except ValueError:
            return None
        expected = f"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(parts)}"
        return info if info.etag.strip('"') == expected else None

    def _upload_exists(self, key: str, upload_id: str) -> bool:
        try:
            self.client.list_parts(Bucket=self.bucket, Key=self.full_key(key),
                                   UploadId=upload_id, MaxParts=1)
        except ClientError as error:
            if _code(error) == "NoSuchUpload":
                return False
            raise _translate(error, "check upload " + key) from error
        except BotoCoreError as error:
            raise _translate(error, "check upload " + key) from error
        return True

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort the upload and free its parts; no error if it is already gone.
        A part upload racing the abort may leave a part behind: S3 advises aborting
        again once such uploads have finished."""
        name = self.full_key(key)
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=name,
                                               UploadId=upload_id)
        except ClientError as error:
            if _code(error) == "NoSuchUpload":
                return
            raise _translate(error, "abort " + key) from error
        except BotoCoreError as error:
            raise _translate(error, "abort " + key) from error

    def list_parts(self, key: str, upload_id: str) -> list[tuple[int, int, str]]:
        """(number, size, etag) of the parts S3 holds for the upload. DIAGNOSTIC ONLY:
        the design forbids deriving an offset from it (listing may lag on some stores;
        the ledger in PostgreSQL is the truth).

        moto difference: moto treats ``PartNumberMarker`` as an index into its list of
        parts, not as a part number, so paging skips parts when the numbers have gaps.
        Asking for 1000 parts per page (S3's maximum) keeps uploads of up to 1000 parts
        on one page, where the marker is never used; beyond that, pages are followed
        by the marker and a page that brings no new part ends the listing.
        """
        name = self.full_key(key)
        found: dict[int, tuple[int, int, str]] = {}
        marker = 0
        while True:
            with _mapped("list parts " + key):
                page = self.client.list_parts(Bucket=self.bucket, Key=name,
                                              UploadId=upload_id, MaxParts=1000,
                                              PartNumberMarker=marker)
            new = [p for p in page.get("Parts", []) if int(p["PartNumber"]) not in found]
            for part in new:
                number = int(part["PartNumber"])
                found[number] = (number, int(part["Size"]), str(part["ETag"]))
            if not page.get("IsTruncated") or not new:
                return [found[number] for number in sorted(found)]
            marker = int(page["NextPartNumberMarker"])
