"""Rotating event logs under the data directory: one line per event, nothing personal.

Callers log events and counts (``take_sealed part=3 seconds=41.2 overflows=0``), never
a name, contact, answer, transcript or audio. Messages are formatted by us, not by
the exception machinery of a library that might echo input back, so a log line only
holds what the caller put there.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

LOG_NAME = "kiosk"
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def setup(data_dir: Path, *, name: str = LOG_NAME, level: int = logging.INFO) -> Path:
    """Send the ``kiosk`` (or ``name``) loggers to ``data_dir/logs/<name>.log``, rotated."""
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{name}.log"
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=1_000_000, backupCount=5, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    logger = logging.getLogger(name)
    # Re-running setup (tests, `kiosk` sub-commands) must not double every line.
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return path


def event(logger: logging.Logger, name: str, /, **fields: object) -> None:
    """Log one event as ``name key=value ...``; values must be ids, counts or states."""
    for value in fields.values():
        if not isinstance(value, int | float | bool) and value is not None:
            # Strings are allowed only when short and free of spaces: ids, states,
            # error kinds. Free text is where personal data would slip in.
            if not isinstance(value, str) or " " in value or len(value) > 64:
                raise ValueError(f"log field for event {name!r} is not an id or a count")
    parts = [name] + [f"{k}={v}" for k, v in fields.items()]
    logger.info(" ".join(parts))
