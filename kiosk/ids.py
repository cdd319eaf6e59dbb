"""Submission ids: UUIDv7 (RFC 9562), made on the kiosk.

Python 3.11's ``uuid`` module has no ``uuid7``. A v7 id starts with the Unix time in
milliseconds, so ids sort by creation time on the kiosk and at the centre, and the
other 74 bits are random, so two kiosks never collide.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_last_rand_a = 0


def uuid7(*, now_ms: int | None = None) -> uuid.UUID:
    """A new UUIDv7; ids made in the same millisecond still sort in creation order."""
    global _last_ms, _last_rand_a
    with _lock:
        ms = int(time.time() * 1000) if now_ms is None else now_ms
        rand_a = int.from_bytes(os.urandom(2), "big") & 0x0FFF
        if ms <= _last_ms:
            # Same (or an earlier, if the clock stepped back) millisecond: keep the
            # order by counting up in the 12-bit rand_a field (RFC 9562, method 1).
            ms = _last_ms
            rand_a = _last_rand_a + 1
            if rand_a > 0x0FFF:
                ms += 1
                rand_a = 0
        _last_ms, _last_rand_a = ms, rand_a
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76 | rand_a << 64
    value |= 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


def new_submission_id() -> str:
    return str(uuid7())


def is_submission_id(text: str) -> bool:
    """True for the canonical text of a UUIDv7: the only names allowed under outbox/."""
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        return False
    return parsed.version == 7 and str(parsed) == text
