"""Rotating event logs under the data directory: one line per event, nothing personal.

Callers log events and counts (``take_sealed part=3 seconds=41.2 overflows=0``), never
a name, contact, answer, transcript or audio. Messages are formatted by us, not by
the exception machinery of a library that might echo input back, so a log line only
holds what the caller put there.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

LOG_NAME = "kiosk"
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
#: Set to 1 (the test suite does) to make a free-text log field an error that fails
#: the test. Without it, a kiosk in the field drops the field and goes on: a log call
#: must never abort a recording.
STRICT_ENV = "KIOSK_STRICT_LOGS"


class LogFieldError(ValueError):
    """A log field is not an id, a count or a state (raised in strict mode only)."""


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


def _acceptable(value: object) -> bool:
    if isinstance(value, int | float | bool) or value is None:
        return True
    # Strings are allowed only when short and free of spaces: ids, states, error kinds.
    # Free text is where personal data would slip in.
    return isinstance(value, str) and " " not in value and len(value) <= 64


def event(logger: logging.Logger, name: str, /, **fields: object) -> None:
    """Log one event as ``name key=value ...``; values must be ids, counts or states.

    A value that is not is never written. In strict mode (``KIOSK_STRICT_LOGS=1``, as in
    the tests) that raises :class:`LogFieldError`; otherwise the field is dropped, a
    ``log_field_dropped`` line names the event and the field's key, and the caller
    carries on.
    """
    bad = [key for key, value in fields.items() if not _acceptable(value)]
    if bad:
        if os.environ.get(STRICT_ENV) == "1":
            raise LogFieldError(f"log field {bad[0]!r} of event {name!r} is not an id or"
                                " a count")
        for key in bad:
            del fields[key]
            logger.warning(f"log_field_dropped event={name} field={key}")
    parts = [name] + [f"{k}={v}" for k, v in fields.items()]
    logger.info(" ".join(parts))
