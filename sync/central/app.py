"""The service's HTTP API, under /api/v1 (FastAPI on uvicorn)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from .. import __version__
from . import api
from .api import errors
from .core import Central, Settings
from .reconcile import reconcile, sweep

log = logging.getLogger("central")
_TUS_PREFIX = b"/api/v1/uploads"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]],
                    Callable[[Message], Awaitable[None]]], Awaitable[None]]


class TusResumableHeader:
    """Every response under /uploads carries ``Tus-Resumable`` (errors included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http" or not scope.get("raw_path", b"").startswith(_TUS_PREFIX) \
                and not scope["path"].startswith(_TUS_PREFIX.decode()):
            await self.app(scope, receive, send)
            return

        async def tus_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"tus-resumable"]
                headers.append((b"tus-resumable", b"1.0.0"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, tus_send)


def create_app(data_dir: Path, settings: Settings | None = None, *,
               run_reconcile: bool = True) -> FastAPI:
    if settings is None:
        settings = Settings(bench_sink=os.environ.get("CENTRAL_BENCH_SINK") == "1")
    svc = Central(data_dir, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_reconcile:
            await run_in_threadpool(reconcile, svc)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_sweeper, svc)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        svc.close()

    app = FastAPI(title="I Defend Rights central service", version=__version__,
                  lifespan=lifespan)
    app.state.central = svc
    app.state.data_dir = data_dir
    errors.install(app)

    @app.get("/api/v1/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness: the service answers."""
        return {"status": "ok", "service": "central", "version": __version__}

    app.include_router(api.router(bench_sink=settings.bench_sink))
    from .api import fleet  # the administrator's fleet view (JSON and an HTML page)

    app.include_router(fleet.router)
    _honest_openapi(app)
    app.add_middleware(TusResumableHeader)  # type: ignore[arg-type]
    return app


async def _sweeper(svc: Central) -> None:
    while True:
        await anyio.sleep(svc.settings.sweep_interval)
        try:
            counts = await run_in_threadpool(sweep, svc)
        except Exception as exc:  # keep sweeping next time; say what kind of failure
            log.error("sweep_failed %s", type(exc).__name__)
            continue
        if counts:
            log.info("sweep: %s", " ".join(f"{k}={v}" for k, v in sorted(counts.items())))


def _honest_openapi(app: FastAPI) -> None:
    """Drop FastAPI's automatic 422 entries: validation errors are 400 here (errors.py)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                answers = operation.get("responses", {})
                entry = answers.get("422")
                if entry and "HTTPValidationError" in str(entry):
                    del answers["422"]
                    answers.setdefault("400", {
                        "description": "malformed request",
                        "content": {"application/json": {"schema": {
                            "$ref": "#/components/schemas/ErrorBody"}}}})
        components = schema.get("components", {}).get("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        if "ErrorBody" not in components:
            components["ErrorBody"] = errors.ErrorBody.model_json_schema()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
