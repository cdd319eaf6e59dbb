"""The service's HTTP API, under /api/v1."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from .. import __version__
from . import store


def create_app(data_dir: Path) -> FastAPI:
    db_path = store.check(data_dir)
    app = FastAPI(title="I Defend Rights central service", version=__version__)
    app.state.data_dir = data_dir
    app.state.db_path = db_path

    @app.get("/api/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok", "service": "central", "version": __version__}

    return app
