"""The gate in front of staff mode: the PIN, with a lockout that survives a restart.

Five wrong PINs in a row lock the gate for five minutes; while it is locked even the
right PIN is refused, and nothing is checked (so nothing is learnt). A right PIN resets
the count. A person at the kiosk can power it off and on again, so the count and the
lock live in ``data_dir/staff-lock.json`` (``{"failures": n, "locked_until": t}``, t
in wall-clock seconds), written as every durable file of the kiosk is: temp file,
fsync, rename, fsync the folder.

Failing closed:

* a lock file that cannot be read or makes no sense locks the gate for ``lock_s`` from
  now (and is rewritten so, so that the lock ends); the log says so;
* a lock file that cannot be written (a full disk) keeps the unsaved state in memory:
  until a write succeeds, the gate is as strict as the stricter of the two;
* a ``locked_until`` more than ``lock_s`` ahead (the clock was set back) is pulled in
  to ``lock_s`` from now, so that a clock fix cannot lock staff out for days.

A clock set forward ends a lock early; the kiosk has no other clock that survives a
power cut. Logged: events and counts, never a PIN.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import logs
from .pin import is_pin_hash, verify_pin

log = logging.getLogger("kiosk.staff")

LOCK_FILE = "staff-lock.json"
MAX_FAILURES = 5
LOCK_S = 300.0


class Verdict(enum.StrEnum):
    OPEN = "open"
    WRONG = "wrong"
    LOCKED = "locked"
    #: No PIN is configured (or the configured hash is malformed): staff mode is shut.
    NO_PIN = "no_pin"


OPEN = Verdict.OPEN
WRONG = Verdict.WRONG
LOCKED = Verdict.LOCKED
NO_PIN = Verdict.NO_PIN


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    #: WRONG: how many more wrong PINs lock the gate (0 means this one locked it, and
    #: then ``seconds_left`` is set too).
    failures_left: int = 0
    #: LOCKED (or the WRONG that locked): seconds until a PIN is checked again.
    seconds_left: float = 0.0

    @property
    def opened(self) -> bool:
        return self.verdict is Verdict.OPEN


@dataclass(frozen=True)
class _State:
    failures: int = 0
    locked_until: float = 0.0


class PinGate:
    """``try_pin(pin)`` for the staff screen's keypad; one per app, or one per attempt."""

    def __init__(self, data_dir: Path, pin_hash: str | None, *,
                 clock: Callable[[], float] = time.time, max_failures: int = MAX_FAILURES,
                 lock_s: float = LOCK_S) -> None:
        if max_failures < 1 or lock_s <= 0:
            raise ValueError("max_failures must be >= 1 and lock_s > 0")
        self.path = Path(data_dir) / LOCK_FILE
        self.clock = clock
        self.max_failures = max_failures
        self.lock_s = float(lock_s)
        self._pin_hash = pin_hash if is_pin_hash(pin_hash) else None
        if pin_hash is not None and self._pin_hash is None:
            logs.event(log, "staff_pin_hash_malformed")
        #: The last state this gate could not write, if any: until a write succeeds,
        #: the gate is as strict as the stricter of it and the file.
        self._unsaved: _State | None = None

    @property
    def configured(self) -> bool:
        return self._pin_hash is not None

    def seconds_locked(self) -> float:
        """Seconds the gate stays locked (0.0 when a PIN would be checked now)."""
        now = self.clock()
        return self._remaining(self._load(now), now)

    def try_pin(self, pin: str) -> Outcome:
        """Check ``pin`` unless the gate is locked; count a failure durably before replying."""
        if self._pin_hash is None:
            logs.event(log, "staff_pin_refused", reason="no_pin")
            return Outcome(NO_PIN)
        now = self.clock()
        state = self._load(now)
        remaining = self._remaining(state, now)
        if remaining > 0:
            logs.event(log, "staff_pin_refused", reason="locked",
                       seconds_left=math.ceil(remaining))
            return Outcome(LOCKED, seconds_left=remaining)
        if verify_pin(pin, self._pin_hash):
            if state != _State():
                self._save(_State())
            logs.event(log, "staff_pin_ok")
            return Outcome(OPEN)
        failures = state.failures + 1
        if failures >= self.max_failures:
            self._save(_State(0, now + self.lock_s))
            logs.event(log, "staff_locked", failures=failures, seconds=self.lock_s)
            return Outcome(WRONG, failures_left=0, seconds_left=self.lock_s)
        self._save(_State(failures, 0.0))
        left = self.max_failures - failures
        logs.event(log, "staff_pin_wrong", failures=failures, left=left)
        return Outcome(WRONG, failures_left=left)

    # -- the file -------------------------------------------------------------------------

    def _remaining(self, state: _State, now: float) -> float:
        return max(0.0, state.locked_until - now)

    def _load(self, now: float) -> _State:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            file_state = _State()
        except OSError as exc:
            return self._fail_closed(now, type(exc).__name__)
        else:
            try:
                file_state = _decode(raw)
            except ValueError as exc:
                return self._fail_closed(now, str(exc))
        state = file_state
        if self._unsaved is not None:
            state = _State(max(state.failures, self._unsaved.failures),
                           max(state.locked_until, self._unsaved.locked_until))
        if state.locked_until - now > self.lock_s:
            logs.event(log, "staff_lock_clock_back", seconds=round(state.locked_until - now))
            state = _State(state.failures, now + self.lock_s)
            self._save(state)
        return state

    def _fail_closed(self, now: float, kind: str) -> _State:
        logs.event(log, "staff_lock_file_bad", kind=kind, seconds=self.lock_s)
        state = _State(0, now + self.lock_s)
        # Rewritten, so that the lock ends; if that fails too, the next attempt finds the
        # same bad file and locks again: no PIN is checked until the file is fixed.
        self._save(state)
        return state

    def _save(self, state: _State) -> None:
        self._unsaved = state  # until the rename below has happened
        data = json.dumps({"failures": state.failures,
                           "locked_until": state.locked_until}).encode("ascii")
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{LOCK_FILE}.",
                                            suffix=".tmp")
        except OSError as exc:
            logs.event(log, "staff_lock_save_failed", kind=type(exc).__name__)
            return
        tmp = Path(tmp_name)
        try:
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            self._unsaved = None
            dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            logs.event(log, "staff_lock_save_failed", kind=type(exc).__name__)


def _decode(raw: bytes) -> _State:
    """The state in a lock file; ValueError (with a short kind, for the log) otherwise."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("not_json") from None
    if not isinstance(doc, dict):
        raise ValueError("not_an_object")
    failures, until = doc.get("failures"), doc.get("locked_until")
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
        raise ValueError("bad_failures")
    if (isinstance(until, bool) or not isinstance(until, int | float)
            or not math.isfinite(until) or until < 0):
        raise ValueError("bad_locked_until")
    return _State(failures, float(until))
