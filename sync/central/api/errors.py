"""Every error the API answers is ``{"error": "<machine code>", "detail": "<English>"}``.

Request bodies or headers that do not fit the declared schema get **400** ``bad_request``
(not FastAPI's default 422), on every route, so a client has one rule to follow; 422 is
kept for ``parts_not_uploaded``, the one "retry after re-uploading" answer.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
import sys
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..storage.base import StorageUnavailable

log = logging.getLogger("central")
#: sqlite3.SQLITE_FULL (Python 3.11 names it only from 3.11.? on, so spelled out here).
SQLITE_FULL = 13


class ErrorBody(BaseModel):
    error: str
    detail: str


class PartsErrorBody(ErrorBody):
    parts: list[str]


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, *,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def error_response(status: int, error: str, detail: str, *,
                   headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status,
                        headers=headers)


def unauthorized(error: str, detail: str) -> ApiError:
    return ApiError(401, error, detail, headers={"WWW-Authenticate": "Bearer"})


def responses(*codes: int, parts: bool = False) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries for these error statuses."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model = PartsErrorBody if parts and code == 422 else ErrorBody
        out[code] = {"model": model, "description": _DESCRIPTIONS.get(code, "error")}
    return out


_DESCRIPTIONS = {
    400: "malformed request", 401: "missing, unknown or revoked token", 403: "forbidden",
    404: "not found", 408: "request body stalled", 409: "conflict", 410: "expired",
    412: "unsupported tus version", 413: "too large", 415: "wrong content type",
    416: "range not satisfiable", 422: "parts not uploaded", 423: "upload busy",
    460: "checksum mismatch", 503: "storage unreachable, try again later",
    507: "storage full",
}

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request",
               401: "unauthorized", 403: "forbidden"}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.error, exc.detail, headers=exc.headers,
                              **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        detail = exc.detail if isinstance(exc.detail, str) else code
        return error_response(exc.status_code, code, detail,
                              headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Name the fields, never echo the values (they may be secrets or free text).
        where = sorted({".".join(str(p) for p in e.get("loc", ())) for e in exc.errors()})
        return error_response(400, "bad_request", "invalid request: " + ", ".join(where))

    async def _storage(request: Request, exc: Exception) -> JSONResponse:
        # The usual storage failures are answered here rather than by the catch-all
        # below, which Starlette re-raises after answering: an outage of the database or
        # the object store would otherwise write a traceback per request.
        reply = _storage_reply(request, exc)
        if reply is None:
            raise exc  # not a storage failure: the catch-all answers 500, with traceback
        return reply

    app.add_exception_handler(StorageUnavailable, _storage)
    app.add_exception_handler(OSError, _storage)
    psycopg = sys.modules.get("psycopg")  # loaded when the store is PostgreSQL
    if psycopg is not None:
        app.add_exception_handler(psycopg.OperationalError, _storage)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        reply = _storage_reply(request, exc)
        if reply is not None:
            return reply
        log.error("internal error %s on %s %s", type(exc).__name__, request.method,
                  request.url.path)
        return error_response(500, "internal", "internal error")


def _storage_reply(request: Request, exc: BaseException) -> JSONResponse | None:
    if disk_full(exc):
        # SQLite or a file write out of space: nothing was committed (the transaction
        # rolled back, the offset did not move), and the client may retry later.
        log.error("storage full on %s %s", request.method, request.url.path)
        return error_response(507, "storage_full", "the service's storage is full")
    if unavailable(exc):
        # A store down or hung: nothing was recorded; come back later.
        log.error("storage unavailable on %s %s", request.method, request.url.path)
        return error_response(503, "storage_unavailable",
                              "the service's storage is unreachable; try again later",
                              headers={"Retry-After": "30"})
    return None


def unavailable(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a store that could not be reached."""
    # psycopg is loaded only on the PostgreSQL store; its OperationalError (the pool's
    # PoolTimeout is one) is a database that is down, restarting or out of connections.
    psycopg = sys.modules.get("psycopg")
    down: tuple[type[BaseException], ...] = (StorageUnavailable,)
    if psycopg is not None:
        down += (psycopg.OperationalError,)
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, down):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is the disk or the database being full."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if (isinstance(exc, sqlite3.OperationalError)
                and getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
