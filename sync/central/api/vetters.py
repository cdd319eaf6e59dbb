"""Vetter endpoints: the queue (optionally one state), and each part's ciphertext (with
a single Range). Decisions are review.py's."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from sync.byte_range import Unsatisfiable
from sync.byte_range import byte_range as parse_byte_range
from sync.vetting import STATES, is_state
from sync.wire import is_part_name, is_submission_id

from ..storage.base import AuditEvent
from .auth import VetterDep, central
from .errors import ApiError, responses

log = logging.getLogger("central")
router = APIRouter()


class QueuePart(BaseModel):
    name: str
    size: int
    sha256: str


class QueueEntry(BaseModel):
    id: str
    device_id: str
    state: str
    #: The reason code of the last decision (sync/vetting.py), or null.
    reason: str | None
    #: The catalog story id once published (kept when unpublished or withdrawn).
    story_id: str | None
    received_at: str
    parts: list[QueuePart]


class Queue(BaseModel):
    submissions: list[QueueEntry]


@router.get("/queue", response_model=Queue, responses=responses(400, 401))
def queue(request: Request, vetter: VetterDep,
          state: Annotated[str | None, Query(
              description="only submissions in this state: " + ", ".join(STATES))] = None,
          ) -> Queue:
    """Every submission (or those in ``state``) with its state, reason, story id, parts."""
    if state is not None and not is_state(state):
        raise ApiError(400, "bad_state", "state must be one of: " + ", ".join(STATES))
    svc = central(request)
    entries = [QueueEntry(id=s.id, device_id=s.device_id, state=s.state, reason=s.reason,
                          story_id=s.story_id, received_at=s.received_at,
                          parts=[QueuePart(name=p.name, size=p.size, sha256=p.sha256)
                                 for p in s.parts])
               for s in svc.meta.list_submissions(state)]
    svc.meta.append_audit(AuditEvent(vetter.id, "queue_listed", state or "queue"))
    return Queue(submissions=entries)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """:func:`sync.byte_range.byte_range`, answering 416 when the range is unsatisfiable."""
    try:
        return parse_byte_range(header, size)
    except Unsatisfiable:
        raise _unsatisfiable(size) from None


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(416, "range_not_satisfiable", "the range is outside the resource",
                    headers={"Content-Range": f"bytes */{size}"})


@router.get(
    "/submissions/{submission_id}/parts/{name}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {
                   "schema": {"type": "string", "format": "binary"}}},
                   "description": "the part's ciphertext"},
               206: {"content": {"application/octet-stream": {
                   "schema": {"type": "string", "format": "binary"}}},
                   "description": "the requested byte range"},
               **responses(401, 404, 416)})
def part(submission_id: str, name: str, request: Request,
         vetter: VetterDep) -> Response:
    """One part's ciphertext, exactly as the device sealed it."""
    svc = central(request)
    if not is_submission_id(submission_id) or not is_part_name(name):
        raise ApiError(404, "not_found", "no such part")
    stored = svc.meta.get_submission(submission_id)
    entry = next((p for p in stored.parts if p.name == name), None) if stored else None
    if entry is None:
        raise ApiError(404, "not_found", "no such part")
    size = svc.blobs.part_size(submission_id, entry.sha256)
    if size is None:
        log.error("part_missing submission %s", submission_id)
        raise ApiError(404, "not_found", "the part's bytes are missing on the service")
    wanted = byte_range(request.headers.get("range"), size)
    svc.meta.append_audit(AuditEvent(vetter.id, "part_fetched", f"{submission_id}/{name}"))
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store"}
    if wanted is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(svc.blobs.read_part(submission_id, entry.sha256),
                                 media_type="application/octet-stream", headers=headers)
    start, end = wanted
    headers["Content-Length"] = str(end - start)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(svc.blobs.read_part(submission_id, entry.sha256, start, end),
                             status_code=206, media_type="application/octet-stream",
                             headers=headers)
