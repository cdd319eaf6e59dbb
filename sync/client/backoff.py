"""How long the kiosk waits before trying the central service again after a failure.

Exponential backoff with full jitter (the AWS architecture blog's "full jitter"): the
n-th wait in a row is drawn uniformly from ``[0, min(cap, base * 2**n)]``. Many kiosks
that lost the same venue network, or one service that came back after a restart, then
do not all knock at once, and the expected wait still doubles per failure.

The server has the last word: a ``Retry-After`` it sent is a floor, never shortened by
the jitter (nor by the cap: the service knows its own load better than we do). A
success, or the network coming back, calls :meth:`Backoff.reset`, so the next failure
starts small again.

Plain Python, no clock and no sleeping: the caller waits, so tests feed a seeded
``random.Random`` and read the delays.
"""

from __future__ import annotations

import math
import random

#: The first wait's upper bound, seconds (issue 11: base 2 s).
BASE_S = 2.0
#: No jittered wait is longer than this, seconds (issue 11: cap 15 min).
CAP_S = 900.0


class Backoff:
    """Full-jitter exponential backoff; one instance per retrying loop (not thread-safe)."""

    def __init__(self, base: float = BASE_S, cap: float = CAP_S, *,
                 rng: random.Random | None = None) -> None:
        if not (base > 0 and cap >= base):
            raise ValueError(f"need 0 < base <= cap, got base={base!r} cap={cap!r}")
        self.base = float(base)
        self.cap = float(cap)
        self._rng = rng if rng is not None else random.Random()
        #: Failures in a row since the last reset.
        self.attempt = 0

    def ceiling(self) -> float:
        """The upper bound of the next jittered wait (before ``Retry-After``)."""
        # Past the cap the exponent stops growing: 2**attempt would overflow a float after
        # ~1000 failures in a row (a kiosk left without network for weeks).
        doublings = math.ceil(math.log2(self.cap / self.base))
        return min(self.cap, self.base * 2.0 ** min(self.attempt, doublings))

    def next_delay(self, retry_after: float | None = None) -> float:
        """Seconds to wait before the next try, counting this failure.

        ``retry_after`` (seconds, from the server's ``Retry-After``) is a floor: the
        delay is never shorter. A negative, NaN or infinite value is ignored (a broken
        header must not stop the kiosk from ever trying again, nor make it hammer).
        """
        delay = self._rng.uniform(0.0, self.ceiling())
        self.attempt += 1
        if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
            delay = max(delay, float(retry_after))
        return delay

    def reset(self) -> None:
        """A success, or the network is back: the next failure starts from ``base``."""
        self.attempt = 0
