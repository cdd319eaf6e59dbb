"""Per-client token buckets, for the one route anyone may call: ``POST /withdraw``.

Each client address has one bucket per window (5 a minute and 30 an hour by default):
a request takes a token from every bucket, and is refused (429, ``Retry-After``) when
any bucket is empty, without taking from the others. A bucket refills continuously
(``limit`` tokens per ``window`` seconds), so a patient client gets a steady rate and a
burst gets at most ``limit``.

The buckets live in this process's memory, which is right for the default deployment
(one ``central serve`` per data directory). Several instances behind a load balancer
(issue 14) each count apart, so a client may get N times the rate: that deployment
moves the buckets to the shared database (or the balancer's own limit). The brute
force this guards against is slow anyway: a receipt code is one of 2^44, and each guess
costs the service one scrypt.

The address is the TCP peer (``request.client.host``); behind a reverse proxy it is
the proxy's, unless the proxy is trusted to pass the client's (uvicorn's
``--forwarded-allow-ips``), which then sets it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence

#: Forget addresses whose buckets are full again once this many are tracked.
PRUNE_AT = 10_000


class RateLimiter:
    def __init__(self, windows: Sequence[tuple[int, float]], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not windows or any(limit < 1 or window <= 0 for limit, window in windows):
            raise ValueError("each window needs a limit >= 1 and a length > 0")
        self.windows = [(float(limit), float(window)) for limit, window in windows]
        self.clock = clock
        self._lock = threading.Lock()
        #: address -> (tokens per window, time of the last update)
        self._buckets: dict[str, tuple[list[float], float]] = {}

    def _refilled(self, address: str, now: float) -> list[float]:
        entry = self._buckets.get(address)
        if entry is None:
            return [limit for limit, _ in self.windows]
        tokens, then = entry
        elapsed = max(0.0, now - then)
        return [min(limit, t + elapsed * limit / window)
                for t, (limit, window) in zip(tokens, self.windows, strict=True)]

    def take(self, address: str) -> float | None:
        """Take one token for ``address``: None if allowed, else seconds to wait."""
        now = self.clock()
        with self._lock:
            tokens = self._refilled(address, now)
            if all(t >= 1.0 for t in tokens):
                self._buckets[address] = ([t - 1.0 for t in tokens], now)
                if len(self._buckets) > PRUNE_AT:
                    self._prune(now)
                return None
            self._buckets[address] = (tokens, now)
            wait = max((1.0 - t) * window / limit
                       for t, (limit, window) in zip(tokens, self.windows, strict=True)
                       if t < 1.0)
            return wait

    def _prune(self, now: float) -> None:
        full = [a for a in self._buckets
                if all(t >= limit for t, (limit, _) in
                       zip(self._refilled(a, now), self.windows, strict=True))]
        for address in full:
            del self._buckets[address]


def retry_after_header(wait: float) -> str:
    """Whole seconds, rounded up, at least 1 (RFC 9110 delay-seconds)."""
    return str(max(1, math.ceil(wait)))
