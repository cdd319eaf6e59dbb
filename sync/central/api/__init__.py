"""The HTTP API under /api/v1, one module per concern."""

from __future__ import annotations

from fastapi import APIRouter

from sync.wire import API

from . import devices, publishing, review, submissions, uploads, vetters, withdraw


def router(*, bench_sink: bool = False) -> APIRouter:
    api = APIRouter(prefix=API)
    api.include_router(devices.router, tags=["devices"])
    api.include_router(uploads.router, tags=["uploads (tus)"])
    api.include_router(submissions.router, tags=["submissions"])
    api.include_router(vetters.router, tags=["vetters"])
    api.include_router(review.router, tags=["vetters"])
    api.include_router(publishing.router, tags=["publishing"])
    api.include_router(withdraw.router, tags=["withdrawal"])
    if bench_sink:
        api.include_router(uploads.bench_router)
    return api
