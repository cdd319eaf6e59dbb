"""``POST /submissions/{id}/state``: a vetter's decision, as a move between review states.

The moves and the reason codes are sync/vetting.py's, so the vetting tool and the
service agree on them. The move is one compare-and-set on the stored state with its
audit line (ids, states and reason codes only: a vetter's note never reaches the
service), so two vetters deciding at once cannot both win. Sending the state the
submission already has, with the same reason and story id, is answered 200 and
changes nothing (a retried request after a lost reply).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from sync.vetting import (
    PUBLISHED,
    STATES,
    UNPUBLISHED,
    WITHDRAWN,
    BadReason,
    IllegalTransition,
    check_move,
    is_state,
    is_story_id,
    reason_for,
)
from sync.wire import is_submission_id

from ..storage.base import AuditEvent, Conflict, StoredSubmission
from .auth import VetterDep, central
from .errors import ApiError, responses

router = APIRouter()


class StateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: StrictStr = Field(max_length=32, description="one of: " + ", ".join(STATES))
    reason: StrictStr | None = Field(default=None, max_length=200,
                                     description="a reason code of sync/vetting.py")
    story_id: StrictStr | None = Field(default=None, max_length=200,
                                       description="the catalog story id (published only)")


class StateResponse(BaseModel):
    id: str
    state: str
    reason: str | None
    story_id: str | None


def _reply(s: StoredSubmission) -> StateResponse:
    return StateResponse(id=s.id, state=s.state, reason=s.reason, story_id=s.story_id)


@router.post("/submissions/{submission_id}/state", response_model=StateResponse,
             responses=responses(400, 401, 404, 409))
def set_state(submission_id: str, body: StateRequest, request: Request,
              vetter: VetterDep) -> StateResponse:
    """Move a submission to another review state (approve, reject, publish...)."""
    svc = central(request)
    if not is_submission_id(submission_id):
        raise ApiError(404, "not_found", "no such submission")
    if not is_state(body.state):
        raise ApiError(400, "bad_state", "state must be one of: " + ", ".join(STATES))
    if body.state == WITHDRAWN:
        raise ApiError(409, "illegal_transition",
                       "only the defender's receipt code withdraws a submission")
    try:
        new_reason = reason_for(body.state, body.reason)
    except BadReason as exc:
        raise ApiError(400, "bad_reason", str(exc)) from None
    if body.state == PUBLISHED:
        if not is_story_id(body.story_id):
            raise ApiError(400, "bad_story_id", "publishing needs a story_id: 1 to 64"
                                                " lower-case letters, digits, '-' or '_'")
    elif body.story_id is not None:
        raise ApiError(400, "bad_story_id", "only a move to published takes a story_id")
    stored = svc.meta.get_submission(submission_id)
    if stored is None:
        raise ApiError(404, "not_found", "no such submission")
    if stored.state == body.state:
        same_reason = new_reason is None or new_reason == stored.reason
        same_story = body.story_id is None or body.story_id == stored.story_id
        if same_reason and same_story:
            return _reply(stored)  # a retry: nothing to change
    try:
        check_move(stored.state, body.state)
    except IllegalTransition as exc:
        raise ApiError(409, "illegal_transition", str(exc)) from None
    # The record keeps the last decision's reason; in_review clears it, publishing and
    # unpublishing keep the approval's. The story id stays once given (unpublished and
    # withdrawn submissions still name the story the next catalog must leave out).
    if new_reason is not None:
        reason = new_reason
    elif body.state in (PUBLISHED, UNPUBLISHED):
        reason = stored.reason
    else:
        reason = None
    story_id = body.story_id if body.state == PUBLISHED else stored.story_id
    subject = " ".join([submission_id, f"{stored.state}->{body.state}",
                        *([reason] if reason else []),
                        *([f"story={story_id}"] if body.state == PUBLISHED else [])])
    try:
        moved = svc.meta.set_submission_state(
            submission_id, stored.state, body.state, reason, story_id, time.time(),
            audit=AuditEvent(vetter.id, "submission_state", subject))
    except Conflict:
        raise ApiError(409, "story_id_taken",
                       "another submission is published under this story_id") from None
    if not moved:
        raise ApiError(409, "illegal_transition",
                       "the submission's state changed meanwhile; read the queue again")
    after = svc.meta.get_submission(submission_id)
    assert after is not None
    return _reply(after)
