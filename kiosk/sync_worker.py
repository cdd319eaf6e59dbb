"""The app's background sync: one daemon thread that runs a sync pass now and then.

While the kiosk is enrolled (``device.json`` in the data directory) the worker runs
:func:`kiosk.sync_runner.sync_once` every ``[sync] interval_s`` seconds (60 by default).
After a failed pass it waits a full-jitter backoff instead (:mod:`sync.client.backoff`,
2 s doubling up to 15 min, never sooner than the server's ``Retry-After``); a
successful pass resets it. A revoked kiosk makes no more passes by itself: it keeps
its queue, and staff can still press "Sync now" to see the service's answer.

Why a thread, and why it cannot hurt a recording:

* Passes run on this one thread, one at a time, never on Kivy's main thread: the UI
  keeps drawing whatever the network does (a stalled venue Wi-Fi, a 15 min backoff).
* The thread lowers its own CPU priority (Linux ``nice`` is per thread: ``setpriority``
  on its native id). The recorder's PortAudio callback and writer thread, and the UI,
  win every contention for a core. What is left is the GIL: the uploader spends its
  time in socket writes, file reads and hashing, which all release it.
* ``stop()`` sets the :class:`threading.Event` given to ``sync_once`` as ``stop``, so a
  pass ends at its next chunk; the thread is a daemon, so an app that stops never
  waits for a stuck connection longer than ``stop``'s timeout.

Staff's "Sync now" is :meth:`SyncWorker.run_now`: the pass runs on the worker thread as
soon as it is free (at once when it is idle; a pass already running is joined, and
its progress from then on and its result go to the caller as well). Callbacks are
called on the worker thread; the staff screen hands them to Kivy's main thread.

The store is the app's own (thread-safe; one RLock around its connection).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sync.client.backoff import Backoff

from . import logs
from .config import KioskConfig
from .i18n import N_
from .status import human_bytes
from .vault.store import Store

log = logging.getLogger("kiosk.sync")

#: Seconds between two passes while all is well, unless ``[sync] interval_s`` says.
DEFAULT_INTERVAL_S = 60.0
#: The first pass waits this long after start (at most the interval): the app's start
#: (kv files, fonts, the first frames) has the CPU to itself.
FIRST_PASS_AFTER_S = 10.0
#: The worker thread's nice value: below the UI and the recorder (both at 0).
NICE = 10
#: Enrolment leaves this file (kiosk/staff/facts.py reads it too).
DEVICE_FILE = "device.json"
#: ``SyncResult.error`` codes the worker treats apart: a revoked kiosk makes no more
#: passes by itself; a kiosk not enrolled is looked at again after the interval.
REVOKED = "revoked"
NOT_ENROLLED = "not_enrolled"
#: The error code of a pass that raised (a bug: sync_once reports network trouble).
INTERNAL_ERROR = "internal_error"

#: What staff read after a pass, by ``SyncResult.error`` code (msgids; translate them).
ERROR_TEXTS: dict[str, str] = {
    # TRANSLATORS: {command} is the command that enrols a kiosk; keep it as it is.
    NOT_ENROLLED: N_("Not enrolled: this kiosk has no central service yet ({command})."),
    REVOKED: N_("This kiosk was revoked by the service: its submissions are kept;"
                " export them by USB."),
    "network": N_("No network: will retry."),
    "deadline": N_("The central service did not answer in time: will retry."),
    "server_error": N_("The central service had a problem: will retry."),
    "storage_full": N_("The central service is out of storage space: will retry."),
    "rate_limited": N_("The central service is busy: will retry."),
    "locked": N_("The central service is busy: will retry."),
    "busy": N_("Another sync is running on this kiosk: try again in a moment."),
    "device_broken": N_("This kiosk's enrolment files are damaged: enrol it again."),
    "bad_receipt": N_("The central service's receipt did not verify: will retry."),
    "stopped": N_("Sync stopped."),
    INTERNAL_ERROR: N_("Sync failed because of a fault in the kiosk: will retry."),
}
#: What staff type to enrol the kiosk (kiosk/cli.py).
ENROL_COMMAND = "kiosk enrol"
#: For an error code not in ERROR_TEXTS: {code} is the code (a-z, digits, _).
OTHER_ERROR = N_("Sync failed ({code}): will retry.")
SYNC_DONE = N_("Sync done.")
ACKNOWLEDGED = N_("Acknowledged: {acknowledged}.")
STILL_TO_SEND = N_("Still to send: {pending}.")
REJECTED = N_("Refused by the service: {rejected}.")
SYNCING = N_("Syncing…")
#: {done}/{total}: submissions; {sent}/{size}: bytes, as "1.2 MB".
PROGRESS = N_("Sending: {done} of {total} submissions, {sent} of {size}.")


def describe_result(result: Any, gettext: Callable[[str], str]) -> str:
    """A pass's outcome in plain words for staff: what went, what waits, what failed."""
    error = result.error
    if getattr(result, "revoked", False):
        error = REVOKED  # whatever the 401 said ("revoked", "unauthorized"): the same
    if error is None:
        sentences = [gettext(SYNC_DONE),
                     gettext(ACKNOWLEDGED).format(acknowledged=result.acknowledged)]
    elif error in ERROR_TEXTS:
        sentences = [gettext(ERROR_TEXTS[error]).format(command=ENROL_COMMAND)]
    else:
        sentences = [gettext(OTHER_ERROR).format(code=error)]
    if result.pending or error is None:
        sentences.append(gettext(STILL_TO_SEND).format(pending=result.pending))
    if result.rejected:
        sentences.append(gettext(REJECTED).format(rejected=result.rejected))
    return " ".join(sentences)


def describe_progress(report: Any, gettext: Callable[[str], str]) -> tuple[float, str]:
    """(fraction done 0..1, a line for staff) for a ``SyncProgress``."""
    if report.total == 0 and report.total_bytes == 0:
        return 0.0, gettext(SYNCING)  # the heartbeat, before anything is counted
    if report.total_bytes > 0:
        fraction = report.sent_bytes / report.total_bytes
    elif report.total > 0:
        fraction = report.done / report.total
    else:
        fraction = 0.0
    text = gettext(PROGRESS).format(done=report.done, total=report.total,
                                    sent=human_bytes(report.sent_bytes),
                                    size=human_bytes(report.total_bytes))
    return min(max(fraction, 0.0), 1.0), text


ProgressCallback = Callable[[Any], None]
DoneCallback = Callable[[Any], None]
SyncOnce = Callable[..., Any]


def interval_of(cfg: KioskConfig) -> float:
    """``[sync] interval_s`` from the config, or :data:`DEFAULT_INTERVAL_S`."""
    value = getattr(getattr(cfg, "sync", None), "interval_s", None)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return DEFAULT_INTERVAL_S
    return float(value)


def is_enrolled(data_dir: Path) -> bool:
    return (Path(data_dir) / DEVICE_FILE).is_file()


def failed_result(error: str) -> Any:
    """A result of the shape of ``SyncResult`` for a pass that could not run at all."""
    return SimpleNamespace(acknowledged=0, pending=0, rejected=0, purged=0, error=error,
                           revoked=False, retry_after=None, sent_bytes=0)


def _default_sync_once(*args: Any, **kwargs: Any) -> Any:
    # Imported at the first pass: httpx and the uploader load off the app's start path.
    from .sync_runner import sync_once

    return sync_once(*args, **kwargs)


class SyncWorker:
    """Runs sync passes on a background thread; see the module's docstring.

    ``sync_once``, ``backoff``, ``enrolled`` and ``clock`` are seams for tests.
    """

    def __init__(self, cfg: KioskConfig, store: Store, *, sync_once: SyncOnce | None = None,
                 backoff: Backoff | None = None, interval_s: float | None = None,
                 first_pass_after_s: float = FIRST_PASS_AFTER_S,
                 enrolled: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic, nice: int = NICE) -> None:
        self.cfg = cfg
        self.store = store
        self._sync_once = sync_once or _default_sync_once
        self.backoff = backoff or Backoff()
        self.interval_s = interval_s if interval_s is not None else interval_of(cfg)
        self._first_pass_after_s = min(first_pass_after_s, self.interval_s)
        self._enrolled = enrolled or (lambda: is_enrolled(cfg.data_dir))
        self._clock = clock
        self._nice = nice
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: run_now() requests for the next pass, and the callbacks of the running one.
        self._waiting: list[tuple[ProgressCallback | None, DoneCallback | None]] = []
        self._attached: list[tuple[ProgressCallback | None, DoneCallback | None]] = []
        self._running = False
        self._closed = False
        #: Passes run so far, the last one's result, when (clock) the next one is due
        #: (inf: not by itself, e.g. revoked) and the thread's nice value (None: unset).
        self.passes = 0
        self.last_result: Any = None
        self.next_at: float | None = None
        self.niceness: int | None = None
        #: Called on the worker thread after every pass with its result (the app hands
        #: it to its UI thread, e.g. to load a catalog the pass installed).
        self.on_pass: list[DoneCallback] = []
        #: When (time.monotonic()) the last pass started and ended; None: no pass yet.
        self.last_pass_started: float | None = None
        self.last_pass_ended: float | None = None

    # -- control, from any thread ---------------------------------------------------------
    def start(self) -> None:
        """Start the thread (a no-op while it runs, and once stopped: stopping is final)."""
        with self._lock:
            if self._closed or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._run, name="sync-worker",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Ask the running pass to end and the thread to leave; True once it has."""
        with self._lock:
            self._closed = True
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is None:
            return True
        if thread is not threading.current_thread():
            thread.join(timeout)
        stopped = not thread.is_alive()
        if not stopped:
            logs.event(log, "sync_worker_stop_timeout", timeout_s=timeout)
        return stopped

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def busy(self) -> bool:
        """A pass is running now."""
        with self._lock:
            return self._running

    def run_now(self, progress_cb: ProgressCallback | None = None,
                done_cb: DoneCallback | None = None) -> None:
        """Run one pass as soon as possible, on the worker thread (never the caller's).

        ``progress_cb(SyncProgress)`` and ``done_cb(SyncResult)`` are called on the
        worker thread. A pass already running is joined rather than followed by another.
        Starts the thread if it is not running (a kiosk that was not enrolled at start:
        the pass then says so).
        """
        with self._lock:
            closed = self._closed
            if closed:
                pass
            elif self._running:
                self._attached.append((progress_cb, done_cb))
            else:
                self._waiting.append((progress_cb, done_cb))
        if closed:  # the app is stopping: no pass will come
            self._call(done_cb, failed_result("stopped"))
            return
        self.start()
        self._wake.set()

    # -- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        self._lower_priority()
        next_at = self._clock() + self._first_pass_after_s
        self.next_at = next_at
        while not self._stop.is_set():
            if not self._requested():
                timeout = next_at - self._clock()
                if timeout > 0:
                    self._wake.wait(None if math.isinf(timeout) else timeout)
                self._wake.clear()
                if self._stop.is_set():
                    break
                if not self._requested():
                    if self._clock() < next_at:
                        continue  # woken for nothing (a stop that was then undone)
                    if not self._enrolled():
                        next_at = self._clock() + self.interval_s
                        self.next_at = next_at
                        continue
            result = self._one_pass()
            next_at = self._clock() + self._delay_after(result)
            self.next_at = next_at
        # Whoever still waits for a pass hears that none will come.
        with self._lock:
            left, self._waiting = self._waiting, []
        for _progress, done in left:
            self._call(done, failed_result("stopped"))

    def _requested(self) -> bool:
        with self._lock:
            return bool(self._waiting)

    def _lower_priority(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
            self.niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        except (AttributeError, OSError) as exc:  # not Linux, or not allowed: run anyway
            logs.event(log, "sync_worker_nice_failed", error=type(exc).__name__)

    def _one_pass(self) -> Any:
        with self._lock:
            self._attached, self._waiting = self._waiting, []
            self._running = True
            manual = len(self._attached)
        began = time.monotonic()
        self.last_pass_started = began

        def progress(report: Any) -> None:
            with self._lock:
                callbacks = [p for p, _d in self._attached if p is not None]
            for callback in callbacks:
                self._call(callback, report)

        try:
            result = self._sync_once(self.cfg, self.store, progress=progress,
                                     stop=self._stop)
        except Exception as exc:  # a bug must not end the thread: logged, retried later
            logs.event(log, "sync_pass_crashed", error=type(exc).__name__)
            log.debug("sync pass crashed", exc_info=True)
            result = failed_result(INTERNAL_ERROR)
        with self._lock:
            attached, self._attached = self._attached, []
            self._running = False
            self.passes += 1
            self.last_result = result
            self.last_pass_ended = time.monotonic()
        logs.event(log, "sync_pass", manual=manual, acknowledged=result.acknowledged,
                   pending=result.pending, rejected=result.rejected,
                   error=result.error, seconds=round(time.monotonic() - began, 3))
        for _progress, done in attached:
            self._call(done, result)
        for listener in list(self.on_pass):
            self._call(listener, result)
        return result

    def _delay_after(self, result: Any) -> float:
        error = result.error
        if getattr(result, "revoked", False) or error == REVOKED:
            return math.inf  # keep the queue, stop knocking; staff can still press sync
        if error is None or error == NOT_ENROLLED:
            self.backoff.reset()
            retry_after = result.retry_after or 0.0
            return max(self.interval_s, retry_after)
        return self.backoff.next_delay(result.retry_after)

    @staticmethod
    def _call(callback: Callable[[Any], None] | None, value: Any) -> None:
        if callback is None:
            return
        try:
            callback(value)
        except Exception as exc:  # a listener's bug must not stop the sync
            logs.event(log, "sync_callback_failed", error=type(exc).__name__)
