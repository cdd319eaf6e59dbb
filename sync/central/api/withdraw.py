"""``POST /withdraw``: the defender's receipt code withdraws their submission.

No token (the defender has none, only the four words the kiosk showed), so the route
is rate-limited per client address (ratelimit.py: 5 a minute, 30 an hour by default)
*before* anything else is looked at, malformed bodies included. The answer has one
shape for every code that matches nothing (404 ``unknown_code``), malformed ones
included, so it tells a guesser nothing but "no". The code is never logged, stored
or audited: the audit names the withdrawn submission ids only.

Matching is one indexed lookup of ``withdrawal_key(code)`` (sync/withdrawal.py), the
same function the kiosk applied at submit and sent in the index. A code that matches
an already withdrawn submission answers 200 again.
"""

from __future__ import annotations

import threading
import time

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from sync.withdrawal import withdrawal_key

from .auth import central
from .errors import ApiError, ErrorBody

router = APIRouter()
#: scrypt takes 32 MiB and ~0.1 s: a few at a time, whatever the number of addresses.
_SCRYPT_SLOTS = threading.BoundedSemaphore(4)


class WithdrawRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: StrictStr = Field(max_length=200, description="the four-word receipt code")


class WithdrawResponse(BaseModel):
    withdrawn: bool


_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "malformed request"},
    404: {"model": ErrorBody, "description": "no submission has this code"},
    429: {"model": ErrorBody, "description": "too many attempts from this address",
          "headers": {"Retry-After": {"description": "seconds to wait",
                                      "schema": {"type": "string", "pattern": "^[0-9]+$"}}}},
}


def _unknown() -> ApiError:
    return ApiError(404, "unknown_code", "no submission has this receipt code")


def check_rate(request: Request) -> None:
    """429 with Retry-After once this address has used up its attempts."""
    from ..ratelimit import retry_after_header

    address = request.client.host if request.client is not None else "unknown"
    wait = central(request).withdraw_limiter.take(address)
    if wait is not None:
        raise ApiError(429, "rate_limited", "too many withdrawal attempts; wait and retry",
                       headers={"Retry-After": retry_after_header(wait)})


_REQUEST_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["code"],
    "properties": {"code": {"type": "string", "maxLength": 200,
                            "description": "the four-word receipt code"}},
}
#: A body longer than this is refused unread (a code is a few dozen characters).
MAX_BODY = 1024


@router.post("/withdraw", response_model=WithdrawResponse, responses=_RESPONSES,
             openapi_extra={"security": [], "requestBody": {"required": True, "content": {
                 "application/json": {"schema": _REQUEST_SCHEMA}}}})
async def withdraw(request: Request) -> WithdrawResponse:
    """Withdraw the submission made with this receipt code (no token; rate-limited)."""
    check_rate(request)  # first: malformed attempts count too
    code = _code(await _read_body(request))
    svc = central(request)
    try:
        key = await run_in_threadpool(_derive, code)
    except ValueError:
        raise _unknown() from None
    matched, _ = await run_in_threadpool(svc.meta.withdraw, key, time.time(),
                                         actor="receipt_code")
    if matched == 0:
        raise _unknown()
    return WithdrawResponse(withdrawn=True)


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise ApiError(400, "bad_request", "the body is too large")
    data = b""
    try:
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_BODY:
                raise ApiError(400, "bad_request", "the body is too large")
    except ClientDisconnect:
        raise ApiError(400, "bad_request", "the body stopped before its end") from None
    return data


def _code(raw: bytes) -> str:
    try:
        body = WithdrawRequest.model_validate_json(raw)
    except ValidationError:
        raise ApiError(400, "bad_request", 'the body must be {"code": "<four words>"}') \
            from None
    return body.code


def _derive(code: str) -> str:
    with _SCRYPT_SLOTS:
        return withdrawal_key(code)
