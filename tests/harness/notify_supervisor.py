"""systemd's side of a ``Type=notify`` service with a watchdog, for a machine whose PID 1
is not systemd (here `systemd --user` refuses: "Trying to run as user instance, but the
system has not been booted with systemd").

It takes its settings from a real unit file (Type, NotifyAccess, WatchdogSec, Restart,
RestartSec, TimeoutAbortSec/TimeoutStopSec, LimitCORE, ExecStart) and does what systemd
does with them: binds NOTIFY_SOCKET, starts ExecStart's main process in a process group
of its own (the unit's cgroup) with NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (its
own pid, as systemd sets it), accepts READY=1 / WATCHDOG=1 only from the senders that
NotifyAccess allows (the kernel tells the sender's pid, SCM_CREDENTIALS), and when no
WATCHDOG=1 came for WatchdogSec after READY=1 sends SIGABRT to every process of the unit,
SIGKILL after the abort timeout, then restarts it (Restart=always) after RestartSec.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_UNITS = {"us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1.0, "sec": 1.0,
          "second": 1.0, "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
          "minutes": 60.0, "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0}


def parse_timespan(text: str) -> float:
    """systemd's time span (``30``, ``30s``, ``1min 30s``, ``500ms``) in seconds."""
    total, rest = 0.0, text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", rest):
        return float(rest)
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", rest):
        if unit not in _UNITS:
            raise ValueError(f"not a systemd time span: {text!r}")
        total += float(number) * _UNITS[unit]
    return total


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (a key may repeat), with continuation lines joined."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@dataclass(frozen=True)
class ServiceSettings:
    type: str
    notify_access: str
    watchdog_s: float
    restart: str
    restart_s: float
    abort_timeout_s: float
    limit_core: int | None
    exec_start: list[str]
    start_limit_interval_s: float

    @classmethod
    def from_unit(cls, path: Path) -> ServiceSettings:
        unit = read_unit(path)
        service, head = unit.get("Service", {}), unit.get("Unit", {})

        def last(table: dict[str, list[str]], key: str, default: str) -> str:
            return table.get(key, [default])[-1]

        stop = last(service, "TimeoutStopSec", "90")
        core = last(service, "LimitCORE", "")
        return cls(
            type=last(service, "Type", "simple"),
            notify_access=last(service, "NotifyAccess", "main"),
            watchdog_s=parse_timespan(last(service, "WatchdogSec", "0")),
            restart=last(service, "Restart", "no"),
            restart_s=parse_timespan(last(service, "RestartSec", "100ms")),
            abort_timeout_s=parse_timespan(last(service, "TimeoutAbortSec", stop)),
            limit_core=None if core in ("", "infinity") else int(core),
            exec_start=last(service, "ExecStart", "").split(),
            start_limit_interval_s=parse_timespan(last(head, "StartLimitIntervalSec", "10")))


@dataclass
class Event:
    at: float
    what: str  # "start", "notify", "watchdog_timeout", "exit"
    instance: int
    detail: str = ""
    pid: int = 0


# The unit's main process stays the parent; ``WATCHDOG_PID`` is set to its own pid just
# before exec, as systemd sets it between fork and exec.
_EXEC_WITH_WATCHDOG_PID = ("import os, sys; os.environ['WATCHDOG_PID'] = str(os.getpid());"
                           " os.execvp(sys.argv[1], sys.argv[1:])")


@dataclass
class NotifySupervisor:
    settings: ServiceSettings
    argv: list[str]
    env: dict[str, str]
    socket_path: Path
    cwd: Path
    events: list[Event] = field(default_factory=list)
    instance: int = 0

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.bind(str(self.socket_path))
        self._sock.settimeout(0.05)
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready_at: float | None = None
        self._last_ping: float | None = None
        self._restart_at: float | None = None

    # -- the unit's processes ------------------------------------------------------------
    def start(self) -> None:
        self.instance += 1
        env = {**self.env, "NOTIFY_SOCKET": str(self.socket_path)}
        if self.settings.watchdog_s > 0:
            env["WATCHDOG_USEC"] = str(int(self.settings.watchdog_s * 1_000_000))
        limit = self.settings.limit_core

        def in_child() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_CORE, (limit, limit))

        self.proc = subprocess.Popen(
            [sys.executable, "-c", _EXEC_WITH_WATCHDOG_PID, *self.argv], env=env,
            cwd=self.cwd, start_new_session=True, preexec_fn=in_child,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._ready_at = self._last_ping = self._restart_at = None
        self._log("start", pid=self.proc.pid)

    def _kill_unit(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)  # KillMode=control-group: every process
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._kill_unit(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self._kill_unit(signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            self._kill_unit(signal.SIGKILL)  # leftovers of the group, as systemd's stop
        self._sock.close()

    # -- notifications ---------------------------------------------------------------------
    def _sender_allowed(self, pid: int) -> bool:
        assert self.proc is not None
        access = self.settings.notify_access
        if access == "main":
            return pid == self.proc.pid
        if access == "all":
            try:
                return os.getpgid(pid) == self.proc.pid  # any process of the unit
            except ProcessLookupError:
                return False
        return False  # none (exec: only main, during ExecStart; not needed here)

    def _receive(self) -> None:
        try:
            data, ancillary, _flags, _addr = self._sock.recvmsg(
                4096, socket.CMSG_SPACE(struct.calcsize("3i")))
        except TimeoutError:
            return
        pid = 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", payload[:struct.calcsize("3i")])[0]
        now = time.monotonic()
        if not self._sender_allowed(pid):
            self._log("refused", detail=data.decode(errors="replace"), pid=pid)
            return
        for line in data.decode(errors="replace").splitlines():
            self._log("notify", detail=line, pid=pid)
            if line == "READY=1" and self._ready_at is None:
                self._ready_at = self._last_ping = now
            elif line == "WATCHDOG=1":
                self._last_ping = now

    def _log(self, what: str, *, detail: str = "", pid: int = 0) -> None:
        self.events.append(Event(time.monotonic(), what, self.instance, detail, pid))

    # -- the loop ------------------------------------------------------------------------
    def run_for(self, seconds: float) -> None:
        """Supervise for ``seconds``: notifications, watchdog, exits, restarts."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._receive()
            now = time.monotonic()
            assert self.proc is not None
            if self._restart_at is not None:
                if now >= self._restart_at:
                    self.start()
                continue
            if self.proc.poll() is not None:
                self._log("exit", detail=str(self.proc.returncode), pid=self.proc.pid)
                self._kill_unit(signal.SIGKILL)
                if self.settings.restart == "always":
                    self._restart_at = now + self.settings.restart_s
                continue
            if (self.settings.watchdog_s > 0 and self._last_ping is not None
                    and now - self._last_ping > self.settings.watchdog_s):
                self._log("watchdog_timeout", pid=self.proc.pid)
                self._kill_unit(signal.SIGABRT)  # WatchdogSignal= default
                try:
                    self.proc.wait(self.settings.abort_timeout_s)
                except subprocess.TimeoutExpired:
                    self._kill_unit(signal.SIGKILL)
                    self.proc.wait()
                self._last_ping = None

    def wait_for(self, predicate: Callable[[Event], bool], timeout: float) -> Event | None:
        """Run until an event matches ``predicate(event)``; it, or None after timeout."""
        seen = len(self.events)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.run_for(0.05)
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
        return None
