"""systemd's service watchdog and readiness notification, without a dependency.

Under a unit with ``Type=notify`` and ``WatchdogSec=``, systemd passes
``NOTIFY_SOCKET`` (a datagram socket: a file system path, or an abstract name written
with a leading ``@``), ``WATCHDOG_USEC`` and usually ``WATCHDOG_PID``. The app sends
``READY=1`` once its first screen is up, and ``WATCHDOG=1`` at :attr:`Watchdog.interval_s`
(half the timeout) from its Kivy clock: a UI that freezes stops pinging, and systemd
restarts the kiosk.

Nothing here raises: a notification that cannot be sent is logged (its error kind) and
reported as False. Without ``NOTIFY_SOCKET`` (development, tests) everything is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from . import logs

log = logging.getLogger("kiosk.watchdog")


class Watchdog:
    def __init__(self, address: str | bytes | None, *, interval_s: float | None = None
                 ) -> None:
        #: Where notifications go; None: not started by systemd with notify.
        self.address = address
        #: Seconds between pings (half of WATCHDOG_USEC); None: no watchdog, ping() is a
        #: no-op.
        self.interval_s = interval_s if address is not None else None
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *,
                 pid: int | None = None) -> Watchdog:
        """As systemd set it up for this process (``pid``: default ``os.getpid()``)."""
        env = os.environ if environ is None else environ
        address = _address(env.get("NOTIFY_SOCKET", ""))
        interval = _interval(env, os.getpid() if pid is None else pid)
        return cls(address, interval_s=interval)

    @property
    def enabled(self) -> bool:
        """Whether systemd watches this process (ping() sends something)."""
        return self.interval_s is not None

    def ping(self) -> bool:
        """``WATCHDOG=1``: "still alive". False when not under a watchdog or not sent."""
        if self.interval_s is None:
            return False
        return self._send(b"WATCHDOG=1")

    def ready(self) -> bool:
        """``READY=1``: start-up is done. Sent whenever systemd gave a notify socket."""
        return self._send(b"READY=1")

    def stopping(self) -> bool:
        """``STOPPING=1``: an orderly exit has begun (so a slow exit is not a hang)."""
        return self._send(b"STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, message: bytes) -> bool:
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX,
                                           socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message, self.address)
        except OSError as exc:
            # Not fatal here: if pings stop reaching systemd, systemd restarts the kiosk,
            # which is the point of the watchdog.
            logs.event(log, "watchdog_send_failed", message=message.decode().split("=")[0],
                       kind=type(exc).__name__)
            self.close()
            return False
        return True


def _address(value: str) -> str | bytes | None:
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # unset, empty, or a relative path (systemd never sends one)


def _interval(env: Mapping[str, str], pid: int) -> float | None:
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    watched_pid = env.get("WATCHDOG_PID")
    if watched_pid:
        # Meant for another process (our parent, say, whose environment we inherited).
        try:
            if int(watched_pid) != pid:
                return None
        except ValueError:
            logs.event(log, "watchdog_env_bad", key="WATCHDOG_PID")
            return None
    try:
        micro = int(usec)
    except ValueError:
        logs.event(log, "watchdog_env_bad", key="WATCHDOG_USEC")
        return None
    if micro <= 0:
        return None
    return micro / 2 / 1_000_000
