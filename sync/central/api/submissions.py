"""``POST /submissions``: the device-signed index in, the service-signed receipt out.

Order of the checks: the body, the index's form, whose device it names, the signature,
an index already stored under that id, then the parts against the finished uploads. The
parts become the submission's own content-addressed blobs (durable) before the one
transaction that inserts the submission, its parts and its receipt; the primary key on
the submission id, not a prior SELECT, decides between two concurrent requests.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from sync.signing import BadSignatureError, VerifyKey
from sync.wire import MAX_DOCUMENT_BYTES, BadIndex, Receipt, SignedDocument, SubmissionIndex

from ..core import Central
from ..storage.base import (
    AuditEvent,
    Conflict,
    Device,
    StorageError,
    StorageUnavailable,
    StoredPart,
    StoredSubmission,
)
from .auth import DeviceDep, central
from .errors import ApiError, responses

log = logging.getLogger("central")
router = APIRouter()
MAX_BODY = 4 * MAX_DOCUMENT_BYTES


class ReceiptResponse(BaseModel):
    receipt: str
    signature: str


_REQUEST_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["index", "signature"],
    "properties": {
        "index": {"type": "string", "description": "the exact canonical JSON of the index"},
        "signature": {"type": "string", "description": "idrsig1... by the device key"}},
}


def _bad(detail: str) -> ApiError:
    return ApiError(400, "bad_index", detail)


def _parse_body(raw: bytes) -> SignedDocument:
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise _bad("the body is not JSON") from None
    if not isinstance(body, dict) or set(body) != {"index", "signature"} \
            or not isinstance(body["index"], str) or not isinstance(body["signature"], str):
        raise _bad('the body must be {"index": "<text>", "signature": "<text>"}')
    try:
        data = body["index"].encode("utf-8")
    except UnicodeEncodeError:
        raise _bad("the index is not UTF-8 text") from None
    return SignedDocument(data, body["signature"])


@dataclass(frozen=True)
class Accepted:
    """The service's signed receipt; ``created``: False if the index was stored before."""

    receipt: SignedDocument
    created: bool


def _stored_reply(stored: StoredSubmission, signed: SignedDocument) -> Accepted:
    if stored.index != signed.data:
        raise ApiError(409, "index_conflict",
                       "another index is already stored under this submission id")
    return Accepted(SignedDocument(stored.receipt, stored.receipt_signature), False)


def accept(svc: Central, device: Device, signed: SignedDocument) -> JSONResponse:
    """The whole submission step (runs in a worker thread: hashing, copies, fsync)."""
    got = accept_index(svc, device, signed)
    return JSONResponse({"receipt": got.receipt.data.decode("utf-8"),
                         "signature": got.receipt.signature},
                        status_code=201 if got.created else 200)


def _finish_whole_uploads(svc: Central, device: Device, submission_id: str, part: str,
                          size: int) -> bool:
    """Roll forward what a dead instance left half done: an upload whose last bytes were
    recorded (offset = length; HEAD tells the kiosk it is whole) but which the instance
    died before hashing and marking finished. Each is finished here, under its lock, so
    that the kiosk's POST finds it instead of sending the part again. True if any was."""
    from .uploads import finish_upload  # the one place an upload is finished

    done = False
    for upload in svc.meta.whole_unfinished_uploads(device.id, submission_id, part, size):
        if not svc.meta.try_lock_upload(upload.id):
            continue  # a PATCH is on it: it finishes the upload itself
        try:
            again = svc.meta.get_upload(upload.id)
            if again is not None and again.finished_at is None \
                    and again.offset == again.length:
                finish_upload(svc, again, device)
                log.info("upload_rolled_forward upload %s", upload.id)
                done = True
        finally:
            svc.meta.unlock_upload(upload.id)
    return done


def accept_index(svc: Central, device: Device, signed: SignedDocument) -> Accepted:
    """Check ``signed`` (the device's index) against ``device`` and its finished uploads,
    store the submission, return the receipt; :class:`ApiError` for a refusal. Shared
    by ``POST /submissions`` and ``central import`` (USB, sync/central/usb_import.py),
    so both paths make exactly the same checks."""
    try:
        index = SubmissionIndex.parse(signed.data)
    except BadIndex as exc:
        raise _bad(str(exc)) from None
    if index.device_id != device.id:
        raise ApiError(403, "forbidden", "the index names another device")
    try:
        VerifyKey.parse(device.public_key).verify(signed.data, signed.signature,
                                                  context="submission-index")
    except BadSignatureError:
        raise ApiError(400, "bad_signature",
                       "the index signature does not verify under this device's key") \
            from None
    stored = svc.meta.get_submission(index.submission_id)
    if stored is not None:  # a shortcut only: the insert below is what decides
        return _stored_reply(stored, signed)
    uploads = {}
    missing = []
    for part in index.parts:
        found = svc.meta.finished_upload_for(device.id, index.submission_id, part.name,
                                             part.size, part.sha256)
        if found is None and _finish_whole_uploads(svc, device, index.submission_id,
                                                   part.name, part.size):
            found = svc.meta.finished_upload_for(device.id, index.submission_id, part.name,
                                                 part.size, part.sha256)
        if found is None:
            missing.append(part.name)
        else:
            uploads[part.name] = found
    if missing:
        raise ApiError(422, "parts_not_uploaded",
                       "some parts have no finished upload with this size and SHA-256",
                       parts=missing)
    for part in index.parts:
        try:
            svc.blobs.put_part_from_upload(uploads[part.name].id, index.submission_id,
                                           part.sha256)
        except OSError as exc:
            if exc.errno == 28:
                raise ApiError(507, "storage_full", "the service is out of disk space") \
                    from None
            raise
        except StorageUnavailable:
            raise  # the store is down, not the upload wrong: 503 (api/errors.py)
        except StorageError:
            log.error("upload_corrupt upload %s", uploads[part.name].id)
            raise ApiError(422, "parts_not_uploaded",
                           "a stored upload no longer matches its SHA-256; upload it again",
                           parts=[part.name]) from None
    receipt = Receipt.for_index(index, signed.data, received_at=datetime.now(UTC)).sign(svc.key)
    record = StoredSubmission(
        id=index.submission_id, device_id=device.id, index=signed.data,
        index_signature=signed.signature, state="received",
        received_at=Receipt.parse(receipt.data).received_at, receipt=receipt.data,
        receipt_signature=receipt.signature,
        parts=tuple(StoredPart(p.name, p.size, p.sha256) for p in index.parts),
        withdrawal_key=index.withdrawal_key, state_changed_at=time.time())
    try:
        svc.meta.insert_submission(record, audit=AuditEvent(device.id, "submission_received",
                                                            index.submission_id))
    except Conflict:
        # Another request won the race (or an index was stored meanwhile): answer as if
        # it had come first; the stored receipt is the only one.
        stored = svc.meta.get_submission(index.submission_id)
        if stored is None:
            raise
        return _stored_reply(stored, signed)
    return Accepted(receipt, True)


@router.post(
    "/submissions", status_code=201, response_model=ReceiptResponse,
    responses={200: {"model": ReceiptResponse, "description": "the stored receipt (repeat)"},
               **responses(400, 401, 403, 409, 413, 422, 503, 507, parts=True)},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": _REQUEST_SCHEMA}}}})
async def post_submission(request: Request,
                          device: DeviceDep) -> JSONResponse:
    """Hand in the signed index; get the service's signed receipt."""
    chunks = []
    size = 0
    try:
        async for data in request.stream():
            size += len(data)
            if size > MAX_BODY:
                raise ApiError(413, "too_large", "the body is too large for an index")
            chunks.append(data)
    except ClientDisconnect:
        raise ApiError(400, "bad_index", "the body stopped before its end") from None
    signed = _parse_body(b"".join(chunks))
    return await run_in_threadpool(accept, central(request), device, signed)
