"""The ``vet serve`` web app: one static page and a small JSON + audio API.

Routes (all behind :class:`~sync.vet.web.security.Gate`; everything under ``/api/``
needs the session cookie or the login token):

``GET /``                                   the page (static; holds no data)
``POST /api/session``                       login token (Bearer) -> HttpOnly cookie
``GET /api/info``                           service address, reasons, what is possible
``GET /api/queue?state=S&pulled=yes|no``    the queue, merged with what is pulled
``POST /api/pull``                          download what is not pulled yet
``GET /api/submissions/{id}``               state + decrypted manifest + audio parts
``GET /api/submissions/{id}/audio/{part}``  decrypted audio (Range), never cached
``POST /api/submissions/{id}/decision``     approve / reject with a reason (+ local note)
``GET /api/submissions/{id}/preview?trim=I:A-B&disguise=1``  the publish preview
``POST /api/submissions/{id}/publish``      publish with title, name, trims, disguise

Errors are ``{"error": code, "detail": text}``. Audio goes out with ``Cache-Control:
no-store`` so the browser keeps it in memory only; it is decrypted chunk by chunk per
request (a seek decrypts just the chunks it needs).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from sync.byte_range import Unsatisfiable, byte_range
from sync.wire import is_part_name, is_submission_id

from .backend import Backend, BackendError, PreparedPreview, PublishForm
from .security import Gate, GateMiddleware, error

STATIC = Path(__file__).resolve().parent / "static"
_TRIM = re.compile(r"(\d{1,3}):(\d{1,6}(?:\.\d{1,3})?)-(\d{1,6}(?:\.\d{1,3})?)")
_STATES = frozenset({"received", "in_review", "approved", "published", "unpublished",
                     "rejected", "withdrawn"})
_PIECE = 64 * 1024
#: Previews kept in memory (the player asks for ranges while seeking; recomputing the
#: disguise for each would take seconds). Plaintext in RAM only, dropped on eviction.
_PREVIEWS_KEPT = 4


class DecisionBody(BaseModel):
    decision: str = Field(pattern="^(approve|reject)$")
    reason: str | None = Field(default=None, max_length=64)
    note: str | None = Field(default=None, max_length=10_000)


class TrimBody(BaseModel):
    part: int = Field(ge=0, le=999)
    start: float = Field(ge=0, le=86_400)
    end: float = Field(ge=0, le=86_400)


class PublishBody(BaseModel):
    title: str | None = Field(default=None, max_length=200)
    display_name: str | None = Field(default=None, max_length=200)
    anonymous: bool = False
    trims: list[TrimBody] = Field(default_factory=list, max_length=200)
    disguise: bool = False


def _check_id(submission_id: str) -> None:
    if not is_submission_id(submission_id):
        raise BackendError(404, "not_found", "no such submission")


def _trims(items: list[TrimBody] | list[str]) -> dict[int, tuple[float, float]]:
    out: dict[int, tuple[float, float]] = {}
    for item in items:
        if isinstance(item, str):
            match = _TRIM.fullmatch(item)
            if match is None:
                raise BackendError(400, "bad_trim", "a trim is PART:START-END in seconds")
            part, start, end = int(match[1]), float(match[2]), float(match[3])
        else:
            part, start, end = item.part, item.start, item.end
        if end and end <= start:
            raise BackendError(400, "bad_trim", "a trim must end after it starts")
        if start == 0 and end == 0:
            continue  # nothing trimmed
        out[part] = (start, end)
    return out


def _ranged(request: Request, size: int, *, media_type: str,
            read: Any, close: Any = None) -> Response:
    """A 200/206 response over ``read(start, end) -> Iterator[bytes]``."""
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store"}
    try:
        wanted = byte_range(request.headers.get("range"), size)
    except Unsatisfiable:
        if close is not None:
            close()
        return error(416, "range_not_satisfiable", "the range is outside the audio",
                     headers={"Content-Range": f"bytes */{size}"})
    background = BackgroundTask(close) if close is not None else None
    if wanted is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(read(0, size), media_type=media_type, headers=headers,
                                 background=background)
    start, end = wanted
    headers["Content-Length"] = str(end - start)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return StreamingResponse(read(start, end), status_code=206, media_type=media_type,
                             headers=headers, background=background)


class _PreviewCache:
    """The last few previews, in memory, keyed by (submission, trims, disguise)."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[Any, ...], PreparedPreview] = OrderedDict()
        self._lock = threading.Lock()
        self._busy: dict[tuple[Any, ...], threading.Lock] = {}

    def get(self, key: tuple[Any, ...], make: Any) -> PreparedPreview:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            busy = self._busy.setdefault(key, threading.Lock())
        with busy:  # one computation per key; the player's parallel requests wait
            with self._lock:
                if key in self._items:
                    return self._items[key]
            try:
                made: PreparedPreview = make()
            finally:
                with self._lock:
                    self._busy.pop(key, None)
            with self._lock:
                self._items[key] = made
                while len(self._items) > _PREVIEWS_KEPT:
                    self._items.popitem(last=False)
            return made

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def create_app(backend: Backend, gate: Gate) -> FastAPI:
    """The app for one server: ``gate`` knows its port and its secrets."""
    app = FastAPI(title="vet serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(GateMiddleware, gate=gate)
    previews = _PreviewCache()

    @app.exception_handler(BackendError)
    async def _backend_error(_request: Request, exc: BackendError) -> Response:
        return error(exc.status, exc.code, exc.detail)

    @app.exception_handler(404)
    async def _not_found(_request: Request, _exc: Exception) -> Response:
        return error(404, "not_found", "no such page")

    @app.exception_handler(405)
    async def _bad_method(_request: Request, _exc: Exception) -> Response:
        return error(405, "method_not_allowed", "this method is not allowed here")

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        fields = sorted({".".join(str(p) for p in e.get("loc", ())[1:]) for e in exc.errors()})
        return error(400, "bad_request", "invalid fields: " + ", ".join(fields))

    # -- the page ---------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        kinds = {"app.js": "text/javascript; charset=utf-8",
                 "app.css": "text/css; charset=utf-8"}
        if name not in kinds:
            raise BackendError(404, "not_found", "no such file")
        return FileResponse(STATIC / name, media_type=kinds[name])

    # -- session ----------------------------------------------------------------------
    @app.post("/api/session", status_code=204)
    def session(request: Request) -> Response:
        if not gate.bearer_ok(request):
            return error(401, "unauthorized", "that is not this server's login token",
                         headers={"WWW-Authenticate": "Bearer"})
        response = Response(status_code=204)
        gate.set_session_cookie(response)
        return response

    # -- data -------------------------------------------------------------------------
    @app.get("/api/info")
    def info() -> dict[str, Any]:
        return backend.info()

    @app.get("/api/queue")
    def queue(state: Annotated[str | None, Query(max_length=20)] = None,
              pulled: Annotated[str | None, Query(pattern="^(yes|no|all)$")] = None
              ) -> dict[str, Any]:
        if state is not None and state not in _STATES:
            raise BackendError(400, "bad_state", "unknown state")
        listed = backend.queue(state=state)
        if pulled in ("yes", "no"):
            want = pulled == "yes"
            listed = {**listed, "submissions": [s for s in listed["submissions"]
                                                if bool(s.get("pulled")) == want]}
        return listed

    @app.post("/api/pull")
    def pull() -> dict[str, Any]:
        previews.clear()  # a pull may remove withdrawn submissions: drop their audio too
        return backend.pull()

    @app.get("/api/submissions/{submission_id}")
    def submission(submission_id: str) -> JSONResponse:
        _check_id(submission_id)
        return JSONResponse(backend.submission(submission_id))

    @app.get("/api/submissions/{submission_id}/audio/{part}")
    def audio(submission_id: str, part: str, request: Request) -> Response:
        _check_id(submission_id)
        if not is_part_name(part) or part.endswith(".json.age"):
            raise BackendError(404, "not_found", "no such audio part")
        reader = backend.open_audio(submission_id, part)
        lock = threading.Lock()

        def read(start: int, end: int) -> Iterator[bytes]:
            pos = start
            while pos < end:
                with lock:
                    if reader.closed:
                        return
                    reader.seek(pos)
                    piece = reader.read(min(_PIECE, end - pos))
                if not piece:
                    return
                pos += len(piece)
                yield piece

        def close() -> None:
            with lock:
                reader.close()

        return _ranged(request, reader.size, media_type="audio/ogg", read=read, close=close)

    @app.post("/api/submissions/{submission_id}/decision")
    def decide(submission_id: str, body: DecisionBody) -> dict[str, Any]:
        _check_id(submission_id)
        note = body.note.strip() if body.note else None
        previews.clear()
        return backend.decide(submission_id, decision=body.decision, reason=body.reason,
                              note=note or None)

    @app.get("/api/submissions/{submission_id}/preview")
    def preview(submission_id: str, request: Request,
                trim: Annotated[list[str] | None, Query(max_length=200)] = None,
                disguise: bool = False) -> Response:
        _check_id(submission_id)
        trims = _trims(trim or [])
        key = (submission_id, tuple(sorted(trims.items())), disguise)
        made = previews.get(key, lambda: backend.preview(submission_id, trims=trims,
                                                         disguise=disguise))
        data = made.ogg_bytes

        def read(start: int, end: int) -> Iterator[bytes]:
            for pos in range(start, end, _PIECE):
                yield data[pos:min(end, pos + _PIECE)]

        response = _ranged(request, len(data), media_type="audio/ogg", read=read)
        response.headers["X-Duration"] = f"{made.duration_s:.3f}"
        return response

    @app.post("/api/submissions/{submission_id}/publish")
    def publish(submission_id: str, body: PublishBody) -> dict[str, Any]:
        _check_id(submission_id)
        title = (body.title or "").strip() or None
        name = (body.display_name or "").strip() or None
        if not body.anonymous and name is None:
            raise BackendError(400, "display_name_missing",
                               "give a display name or choose Anonymous")
        form = PublishForm(title=title, display_name=None if body.anonymous else name,
                           anonymous=body.anonymous, trims=_trims(body.trims),
                           disguise=body.disguise)
        previews.clear()  # what was previewed is now public (or still refused)
        return backend.publish(submission_id, form)

    return app
