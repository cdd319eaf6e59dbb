"""tus 1.0.0 at ``/uploads/``: creation, checksum, termination and expiration.

A PATCH body is written straight into the upload's blob past its committed offset,
hashed as it arrives (api/body.py); only when it is whole, its checksum right and its
bytes durable (fdatasync) does the committed offset move. A checksum mismatch or a cut
cuts the blob back to the committed offset, so nothing is written twice. With an
``Upload-Checksum`` the chunk is all or nothing; without one, what arrived before a cut
is kept, as tus says. Blocking file work runs in worker threads so the event loop keeps
serving other devices.

One lock per upload, taken without waiting (423 when busy) and held for the whole PATCH;
a stalled body cannot hold it forever because every body read has an idle timeout.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import re
import secrets
import time
from email.utils import formatdate
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool

from sync.wire import (
    API,
    TUS_VERSION,
    decode_metadata,
    is_part_name,
    is_submission_id,
    parse_checksum_header,
)

from ..core import Central
from ..storage.base import AuditEvent, Conflict, Device, OffsetMismatch, Upload, UploadAppend
from .auth import DeviceDep, central
from .body import DIGESTS, Digest, receive_body
from .errors import ApiError, responses

log = logging.getLogger("central")
router = APIRouter()

UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


class _RunningHashes:
    """The SHA-256 of each upload's bytes so far, fed as they are appended.

    So that finishing an upload does not read all of it back. Only ever used under the
    upload's lock, and only when its offset is exactly the offset the hash covers: after
    a restart (or on another instance) there is none, and :func:`finish_upload` hashes what is
    stored instead. A bounded dict: abandoned uploads cost a few hundred bytes each.
    """

    LIMIT = 4096

    def __init__(self) -> None:
        self._by_upload: dict[str, tuple[int, hashlib._Hash]] = {}

    def start(self, upload_id: str, offset: int) -> hashlib._Hash | None:
        """A copy of the hash covering the first ``offset`` bytes, or None."""
        if offset == 0:
            return hashlib.sha256()
        known = self._by_upload.get(upload_id)
        return known[1].copy() if known is not None and known[0] == offset else None

    def store(self, upload_id: str, offset: int, running: hashlib._Hash) -> None:
        if len(self._by_upload) >= self.LIMIT:
            self._by_upload.clear()
        self._by_upload[upload_id] = (offset, running)

    def take(self, upload_id: str, offset: int) -> str | None:
        known = self._by_upload.pop(upload_id, None)
        return known[1].hexdigest() if known is not None and known[0] == offset else None


_HASHES = _RunningHashes()


TUS_EXTENSIONS = "creation,checksum,termination,expiration"


def _tus_headers(**extra: str) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, **extra}


def _http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def _require_tus(request: Request) -> None:
    if request.headers.get("tus-resumable") != TUS_VERSION:
        raise ApiError(412, "tus_version", f"only tus {TUS_VERSION} is supported",
                       headers={"Tus-Version": TUS_VERSION})


def _own_upload(svc: Central, upload_id: str, device: Device, *,
                allow_expired: bool = False) -> Upload:
    if not UPLOAD_ID.fullmatch(upload_id):
        raise ApiError(404, "not_found", "no such upload")
    upload = svc.meta.get_upload(upload_id)
    if upload is None:
        raise ApiError(404, "not_found", "no such upload")
    if upload.device_id != device.id:
        raise ApiError(403, "forbidden", "this upload belongs to another device")
    if not allow_expired and upload.finished_at is None and upload.expires_at <= time.time():
        raise ApiError(410, "expired", "this upload has expired; start a new one")
    return upload


TusResumable = Annotated[str | None, Header(
    alias="Tus-Resumable", description="must be 1.0.0 (else 412)",
    json_schema_extra={"enum": ["1.0.0"]})]
_DIGITS = {"pattern": "^[0-9]{1,18}$"}
UploadLength = Annotated[str | None, Header(alias="Upload-Length",
                                            description="total bytes, >= 1 (else 400)",
                                            json_schema_extra=_DIGITS)]
UploadMetadata = Annotated[str | None, Header(
    alias="Upload-Metadata",
    description="base64 pairs; submission_id (a UUIDv7) and part are required")]
UploadOffset = Annotated[str | None, Header(alias="Upload-Offset",
                                            description="where these bytes go (else 400)",
                                            json_schema_extra=_DIGITS)]
UploadChecksum = Annotated[str | None, Header(
    alias="Upload-Checksum",
    description="crc32|sha1|sha256 <base64 digest> of this body")]


@router.options("/uploads/", status_code=204, response_class=Response,
                responses={204: {"description": "tus capabilities (headers)"}})
def tus_options(request: Request) -> Response:
    """tus discovery: version, extensions, size limit, checksum algorithms."""
    svc = central(request)
    return Response(status_code=204, headers=_tus_headers(**{
        "Tus-Version": TUS_VERSION, "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(svc.settings.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(DIGESTS)}))


@router.post("/uploads/", status_code=201, response_class=Response,
             responses={201: {"description": "created; Location names the upload"},
                        **responses(400, 401, 412, 413, 503, 507)})
async def tus_create(
    request: Request,
    device: DeviceDep,
    tus_resumable: TusResumable = None,
    upload_length: UploadLength = None,
    upload_metadata: UploadMetadata = None,
) -> Response:
    """Create an upload for one part of one submission."""
    _require_tus(request)
    svc = central(request)
    if upload_length is None or not upload_length.isascii() or not upload_length.isdigit() \
            or len(upload_length) > 18 or int(upload_length) < 1:
        raise ApiError(400, "bad_length", "Upload-Length must be an integer >= 1")
    length = int(upload_length)
    if length > svc.settings.max_upload_bytes:
        raise ApiError(413, "too_large",
                       f"uploads are limited to {svc.settings.max_upload_bytes} bytes")
    try:
        metadata = decode_metadata(upload_metadata or "")
    except ValueError:
        raise ApiError(400, "bad_metadata", "Upload-Metadata is malformed") from None
    submission_id = metadata.get("submission_id")
    part = metadata.get("part")
    if not is_submission_id(submission_id) or not is_part_name(part):
        raise ApiError(400, "bad_metadata",
                       "Upload-Metadata needs submission_id (a UUIDv7) and part (a part name)")
    assert submission_id is not None and part is not None
    upload_id = secrets.token_hex(16)
    now = time.time()
    upload = Upload(upload_id, device.id, submission_id, part, length, 0, now,
                    now + svc.settings.upload_expiry, None, None)
    # The new upload's lock is held from before its blob exists until its row does:
    # another instance's start-up reconciliation (reconcile.py) takes an upload's lock
    # before it calls a blob without a row an orphan, so it never deletes this one.
    if not await run_in_threadpool(svc.meta.try_lock_upload, upload_id):
        # A fresh random id is locked by nobody: every lock connection is busy.
        raise ApiError(503, "busy", "the service is busy; try again later",
                       headers={"Retry-After": "5"})
    try:
        # Blob first: a crash between the two leaves a file without a row, which the
        # start-up reconciliation deletes; never a row pointing at nothing.
        await run_in_threadpool(svc.blobs.create_upload, upload_id)
        await run_in_threadpool(svc.meta.create_upload, upload,
                                audit=AuditEvent(device.id, "upload_created", upload_id))
    except OSError as exc:
        await run_in_threadpool(svc.blobs.delete_upload, upload_id)
        if exc.errno == errno.ENOSPC:
            raise ApiError(507, "storage_full", "the service is out of disk space") from None
        raise
    except Conflict:  # 128 random bits: not expected, but never reuse an id
        raise ApiError(500, "internal", "upload id collision") from None
    finally:
        await run_in_threadpool(svc.meta.unlock_upload, upload_id)
    return Response(status_code=201, headers=_tus_headers(**{
        "Location": f"{API}/uploads/{upload_id}",
        "Upload-Expires": _http_date(upload.expires_at), "Upload-Offset": "0"}))


@router.head("/uploads/{upload_id}", status_code=200, response_class=Response,
             responses={200: {"description": "Upload-Offset and Upload-Length headers"},
                        **responses(401, 403, 404, 410, 412)})
def tus_head(upload_id: str, request: Request, device: DeviceDep,
             tus_resumable: TusResumable = None) -> Response:
    """Where the upload stands: the committed (durable) offset."""
    _require_tus(request)
    upload = _own_upload(central(request), upload_id, device)
    return Response(status_code=200, headers=_tus_headers(**{
        "Upload-Offset": str(upload.offset), "Upload-Length": str(upload.length),
        "Upload-Expires": _http_date(upload.expires_at), "Cache-Control": "no-store"}))


class _ChunkSink:
    """Where a PATCH body goes: hashed for its checksum and the upload's running SHA-256,
    then written at the upload's offset (in one worker thread, one block at a time)."""

    def __init__(self, append: UploadAppend, algorithm: str | None,
                 running: hashlib._Hash | None) -> None:
        self.append = append
        self.digest: Digest | None = DIGESTS[algorithm]() if algorithm else None
        self.running = running
        self.size = 0

    def write(self, data: bytes) -> None:
        if self.digest is not None:
            self.digest.update(data)
        if self.running is not None:
            self.running.update(data)
        self.append.write(data)
        self.size += len(data)


def finish_upload(svc: Central, upload: Upload, device: Device) -> None:
    # The hash of the bytes as they were appended (each append fsynced before its
    # offset moved); without one (a restart mid-upload) hash what is stored.
    sha256 = _HASHES.take(upload.id, upload.length)
    if sha256 is None:
        digest = hashlib.sha256()
        for data in svc.blobs.read_upload(upload.id, 0, upload.length):
            digest.update(data)
        sha256 = digest.hexdigest()
    svc.meta.finish_upload(upload.id, sha256, time.time(),
                           audit=AuditEvent(device.id, "upload_finished", upload.id))


def _full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


@router.patch(
    "/uploads/{upload_id}", status_code=204, response_class=Response,
    responses={204: {"description": "bytes stored; Upload-Offset is the new offset"},
               **responses(400, 401, 403, 404, 408, 409, 410, 412, 413, 415, 423, 460, 507)},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/offset+octet-stream": {"schema": {"type": "string",
                                                       "format": "binary"}}}}})
async def tus_patch(
    upload_id: str, request: Request, device: DeviceDep,
    tus_resumable: TusResumable = None,
    upload_offset: UploadOffset = None,
    upload_checksum: UploadChecksum = None,
) -> Response:
    """Append bytes at the current offset."""
    _require_tus(request)
    svc = central(request)
    await run_in_threadpool(_own_upload, svc, upload_id, device)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/offset+octet-stream":
        raise ApiError(415, "bad_content_type",
                       "Content-Type must be application/offset+octet-stream")
    if upload_offset is None or not upload_offset.isascii() or not upload_offset.isdigit() \
            or len(upload_offset) > 18:
        raise ApiError(400, "bad_offset", "Upload-Offset must be a non-negative integer")
    offset = int(upload_offset)
    algorithm: str | None = None
    expected_digest = b""
    if upload_checksum is not None:
        try:
            algorithm, expected_digest = parse_checksum_header(upload_checksum)
        except ValueError:
            raise ApiError(400, "bad_checksum", "Upload-Checksum is malformed") from None
        if algorithm not in DIGESTS:
            raise ApiError(400, "bad_checksum",
                           "checksum algorithm must be one of " + ", ".join(DIGESTS))
    # In a worker thread: on PostgreSQL the lock is a round trip to the database.
    if not await run_in_threadpool(svc.meta.try_lock_upload, upload_id):
        raise ApiError(423, "locked", "another request is working on this upload")
    try:
        return await _patch_locked(request, svc, upload_id, device, offset, algorithm,
                                   expected_digest)
    finally:
        await run_in_threadpool(svc.meta.unlock_upload, upload_id)


async def _patch_locked(request: Request, svc: Central, upload_id: str, device: Device,
                        offset: int, algorithm: str | None,
                        expected_digest: bytes) -> Response:
    # Read again under the lock: the offset may have moved since the first look.
    upload = await run_in_threadpool(_own_upload, svc, upload_id, device)
    if offset != upload.offset:
        raise ApiError(409, "offset_mismatch", "Upload-Offset is not the upload's offset",
                       headers=_tus_headers(**{"Upload-Offset": str(upload.offset)}))
    room = upload.length - upload.offset
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > room:
        raise ApiError(413, "too_large", "the body goes past Upload-Length")
    try:
        append = await run_in_threadpool(svc.blobs.open_append, upload_id, upload.offset)
    except OSError as exc:
        if _full(exc):
            raise ApiError(507, "storage_full", "the service is out of disk space") from None
        raise
    except OffsetMismatch as exc:
        # Fewer durable bytes than the committed offset: the store lost data.
        log.error("storage_inconsistent upload %s", upload_id)
        raise ApiError(500, "internal", "stored upload is shorter than its offset") from exc
    running = _HASHES.start(upload_id, upload.offset)
    sink = _ChunkSink(append, algorithm, running)
    try:
        try:
            outcome = await receive_body(request, idle_timeout=svc.settings.body_idle_timeout,
                                         write=sink.write, limit=room)
        except OSError as exc:
            if _full(exc):
                raise ApiError(507, "storage_full", "the service is out of disk space",
                               headers=_tus_headers(**{
                                   "Upload-Offset": str(upload.offset)})) from None
            raise
        if outcome == "too_large":
            raise ApiError(413, "too_large", "the body goes past Upload-Length")
        if algorithm is not None:
            assert sink.digest is not None
            if outcome is not None:
                # A checksummed chunk is all or nothing: a cut keeps nothing.
                raise _cut_error(outcome, upload.offset)
            if sink.digest.digest() != expected_digest:
                raise ApiError(460, "checksum_mismatch",
                               "the body does not match Upload-Checksum",
                               headers=_tus_headers(**{"Upload-Offset": str(upload.offset)}))
        new_offset = upload.offset
        if sink.size:
            try:
                new_offset = await run_in_threadpool(append.commit)
            except OSError as exc:
                if _full(exc):
                    raise ApiError(507, "storage_full", "the service is out of disk space",
                                   headers=_tus_headers(**{
                                       "Upload-Offset": str(upload.offset)})) from None
                raise
            # The bytes are durable (fdatasync in commit); only now the offset moves.
            await run_in_threadpool(svc.meta.set_upload_offset, upload_id, new_offset)
            if running is not None:
                _HASHES.store(upload_id, new_offset, running)
            if new_offset == upload.length:
                done = Upload(**{**upload.__dict__, "offset": new_offset})
                await run_in_threadpool(finish_upload, svc, done, device)
        if outcome is not None:
            raise _cut_error(outcome, new_offset)
        return Response(status_code=204, headers=_tus_headers(**{
            "Upload-Offset": str(new_offset),
            "Upload-Expires": _http_date(upload.expires_at)}))
    finally:
        # After a commit this does nothing; otherwise nothing past the offset stays.
        await run_in_threadpool(append.abort)


def _cut_error(outcome: str, offset: int) -> ApiError:
    # Usually nobody reads this (the client is gone); a stalled client may.
    status, code = (408, "body_timeout") if outcome == "timeout" else (400, "body_incomplete")
    return ApiError(status, code, "the request body stopped before its end",
                   headers=_tus_headers(**{"Upload-Offset": str(offset)}))


@router.delete("/uploads/{upload_id}", status_code=204, response_class=Response,
               responses={204: {"description": "terminated"},
                          **responses(401, 403, 404, 412, 423)})
def tus_delete(upload_id: str, request: Request, device: DeviceDep,
               tus_resumable: TusResumable = None) -> Response:
    """Terminate an upload: its row and its bytes go."""
    _require_tus(request)
    svc = central(request)
    _own_upload(svc, upload_id, device, allow_expired=True)
    if not svc.meta.try_lock_upload(upload_id):
        raise ApiError(423, "locked", "another request is working on this upload")
    try:
        # Row first: a crash after it leaves a file without a row, which start-up deletes.
        svc.meta.delete_upload(upload_id,
                               audit=AuditEvent(device.id, "upload_terminated", upload_id))
        svc.blobs.delete_upload(upload_id)
    finally:
        svc.meta.unlock_upload(upload_id)
    return Response(status_code=204, headers=_tus_headers())


# -- optional benchmark sink (CENTRAL_BENCH_SINK=1 only) ----------------------------------

bench_router = APIRouter()


@bench_router.put("/_bench/sink", status_code=204, include_in_schema=False)
async def bench_sink(request: Request, device: DeviceDep) -> Response:
    """A plain PUT that does what storing any upload in this service must: the body
    written once into an upload blob, its SHA-256 computed (every stored part is checked
    against the signed index's), then made durable; no chunk checksums, no offsets.
    Then deleted."""
    svc = central(request)
    blob_id = secrets.token_hex(16)
    await run_in_threadpool(svc.blobs.create_upload, blob_id)
    try:
        append = await run_in_threadpool(svc.blobs.open_append, blob_id, 0)
        digest = hashlib.sha256()

        def write(data: bytes) -> None:
            digest.update(data)
            append.write(data)

        try:
            outcome = await receive_body(request, idle_timeout=svc.settings.body_idle_timeout,
                                         write=write, limit=svc.settings.max_upload_bytes)
            if outcome is not None:
                raise ApiError(400, "body_incomplete", outcome)
            await run_in_threadpool(append.commit)
        finally:
            await run_in_threadpool(append.abort)
    finally:
        await run_in_threadpool(svc.blobs.delete_upload, blob_id)
    return Response(status_code=204, headers={"X-Content-SHA256": digest.hexdigest()})
