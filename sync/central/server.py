"""``central serve``: logging that never carries secrets, then uvicorn."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .core import Settings


def serve(data_dir: Path, settings: Settings, *, host: str, port: int) -> int:
    import os

    import uvicorn

    from .app import create_app

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    central_log = logging.getLogger("central")
    central_log.addHandler(handler)
    central_log.setLevel(logging.INFO)
    central_log.propagate = False
    if os.environ.get("CENTRAL_BENCH_SINK") == "1":
        settings = Settings(**{**settings.__dict__, "bench_sink": True})
    app = create_app(data_dir, settings)
    # Access log lines are method, path and status: no bodies, no headers, no tokens.
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    return 0
