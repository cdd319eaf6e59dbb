"""kiosk.sync_worker: the app's background sync thread, with a fake ``sync_once``.

Intervals are shrunk to tens of milliseconds; what is asserted is the order and the
spacing of passes, never an exact time."""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kiosk.config import KioskConfig
from kiosk.sync_worker import (
    DEFAULT_INTERVAL_S,
    INTERNAL_ERROR,
    SyncWorker,
    interval_of,
    is_enrolled,
)
from sync.client.backoff import Backoff

STORE = object()  # the worker only hands the store on to sync_once


@dataclass
class Result:
    """The fields of kiosk.sync_runner.SyncResult that the worker reads."""

    acknowledged: int = 0
    pending: int = 0
    rejected: int = 0
    purged: int = 0
    error: str | None = None
    revoked: bool = False
    retry_after: float | None = None
    sent_bytes: int = 0


@dataclass
class Progress:
    phase: str
    sent_bytes: int
    total_bytes: int
    done: int
    total: int


@dataclass
class FakeSync:
    """A ``sync_once`` that records each pass (start, end, thread) and answers from a
    script of results (the last one repeats)."""

    results: list[Result] = field(default_factory=lambda: [Result()])
    seconds: float = 0.0
    progress_steps: int = 0
    starts: list[float] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    active: int = 0
    most_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    raise_on: set[int] = field(default_factory=set)

    def __call__(self, cfg: KioskConfig, store: Any, *, progress: Any = None,
                 stop: threading.Event | None = None, **_: Any) -> Result:
        with self.lock:
            n = len(self.starts)
            self.starts.append(time.monotonic())
            self.threads.append(threading.get_ident())
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            assert store is STORE and stop is not None
            if n in self.raise_on:
                raise RuntimeError("a bug in the uploader")
            end = time.monotonic() + self.seconds
            step = 0
            while time.monotonic() < end or step < self.progress_steps:
                if stop.is_set():
                    return Result(error="stopped")
                if progress is not None and step < self.progress_steps:
                    step += 1
                    progress(Progress("upload", step * 100, self.progress_steps * 100,
                                      0, 1))
                time.sleep(0.005)
            return self.results[min(n, len(self.results) - 1)]
        finally:
            with self.lock:
                self.active -= 1

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


class SpyBackoff(Backoff):
    """A real Backoff whose delays are fixed, with its calls recorded."""

    def __init__(self, delay: float) -> None:
        super().__init__(rng=random.Random(0))
        self.delay = delay
        self.calls: list[tuple[str, float | None]] = []

    def next_delay(self, retry_after: float | None = None) -> float:
        self.calls.append(("next_delay", retry_after))
        return max(self.delay, retry_after or 0.0)

    def reset(self) -> None:
        self.calls.append(("reset", None))
        super().reset()


@pytest.fixture
def cfg(tmp_path: Path) -> KioskConfig:
    return KioskConfig(data_dir=tmp_path)


@pytest.fixture
def workers() -> Any:
    made: list[SyncWorker] = []

    def make(cfg: KioskConfig, sync: FakeSync, **kwargs: Any) -> SyncWorker:
        kwargs.setdefault("first_pass_after_s", 0.0)
        kwargs.setdefault("enrolled", lambda: True)
        worker = SyncWorker(cfg, STORE, sync_once=sync, **kwargs)  # type: ignore[arg-type]
        made.append(worker)
        return worker

    yield make
    for worker in made:
        assert worker.stop(timeout=2.0)


def wait_until(condition: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# -- the interval ------------------------------------------------------------------------

def test_passes_run_every_interval_while_enrolled(cfg, workers) -> None:
    sync = FakeSync()
    worker = workers(cfg, sync, interval_s=0.1)
    worker.start()
    time.sleep(0.55)
    worker.stop()
    assert 4 <= len(sync.starts) <= 7, sync.starts
    assert all(gap >= 0.095 for gap in sync.gaps()), sync.gaps()
    assert worker.passes == len(sync.starts)


def test_the_first_pass_waits_for_the_app_to_start(cfg, workers) -> None:
    sync = FakeSync()
    worker = workers(cfg, sync, interval_s=5.0, first_pass_after_s=0.3)
    began = time.monotonic()
    worker.start()
    wait_until(lambda: sync.starts)
    assert sync.starts[0] - began >= 0.29


def test_no_pass_by_itself_while_not_enrolled_but_staff_can_ask(cfg, workers) -> None:
    sync = FakeSync(results=[Result(error="not_enrolled")])
    worker = workers(cfg, sync, interval_s=0.05, enrolled=lambda: False)
    worker.start()
    time.sleep(0.3)
    assert sync.starts == []
    done: list[Result] = []
    worker.run_now(done_cb=done.append)
    wait_until(lambda: done)
    assert done[0].error == "not_enrolled" and len(sync.starts) == 1


def test_enrolment_is_device_json_in_the_data_dir(cfg: KioskConfig) -> None:
    assert not is_enrolled(cfg.data_dir)
    (cfg.data_dir / "device.json").write_text("{}")
    assert is_enrolled(cfg.data_dir)


def test_the_interval_comes_from_the_config_sync_section(cfg: KioskConfig) -> None:
    assert interval_of(cfg) == DEFAULT_INTERVAL_S == 60.0

    @dataclass(frozen=True)
    class WithSync:
        sync: Any

    assert interval_of(WithSync(sync=type("S", (), {"interval_s": 15})())) == 15.0  # type: ignore[arg-type]
    assert interval_of(WithSync(sync=type("S", (), {"interval_s": 0})())) == 60.0  # type: ignore[arg-type]


# -- failures: backoff, Retry-After, revoked --------------------------------------------

def test_a_failure_backs_off_and_a_success_resets(cfg, workers) -> None:
    sync = FakeSync(results=[Result(error="network"), Result(error="network"), Result()])
    backoff = SpyBackoff(delay=0.25)
    worker = workers(cfg, sync, interval_s=0.05, backoff=backoff)
    worker.start()
    wait_until(lambda: len(sync.starts) >= 5)
    worker.stop()
    assert backoff.calls[:3] == [("next_delay", None), ("next_delay", None), ("reset", None)]
    gaps = sync.gaps()
    assert gaps[0] >= 0.24 and gaps[1] >= 0.24  # backed off after each failure
    assert gaps[2] < 0.2 and gaps[3] < 0.2  # after the success: the interval again


def test_real_backoff_delays_grow_between_failures(cfg, workers) -> None:
    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    sync = FakeSync(results=[Result(error="server_error")])
    worker = workers(cfg, sync, interval_s=10.0,
                     backoff=Backoff(0.04, 0.16, rng=Top()))
    worker.start()
    wait_until(lambda: len(sync.starts) >= 5)
    worker.stop()
    gaps = sync.gaps()[:4]
    for gap, ceiling in zip(gaps, (0.04, 0.08, 0.16, 0.16), strict=True):
        assert ceiling - 0.005 <= gap < ceiling + 0.1, gaps


def test_retry_after_is_honoured_after_a_failure(cfg, workers) -> None:
    sync = FakeSync(results=[Result(error="server_error", retry_after=0.4), Result()])
    worker = workers(cfg, sync, interval_s=0.05, backoff=Backoff(0.01, 0.02))
    worker.start()
    wait_until(lambda: len(sync.starts) >= 2)
    assert sync.gaps()[0] >= 0.39


def test_retry_after_is_honoured_after_a_success_too(cfg, workers) -> None:
    sync = FakeSync(results=[Result(retry_after=0.3), Result()])
    worker = workers(cfg, sync, interval_s=0.05)
    worker.start()
    wait_until(lambda: len(sync.starts) >= 2)
    assert sync.gaps()[0] >= 0.29


def test_a_revoked_kiosk_stops_passing_by_itself(cfg, workers) -> None:
    sync = FakeSync(results=[Result(error="revoked", revoked=True, pending=3)])
    worker = workers(cfg, sync, interval_s=0.05)
    worker.start()
    time.sleep(0.4)
    assert len(sync.starts) == 1 and worker.next_at == float("inf")
    done: list[Result] = []
    worker.run_now(done_cb=done.append)  # staff may still ask, and hear why
    wait_until(lambda: done)
    assert done[0].revoked and len(sync.starts) == 2


def test_a_pass_that_raises_is_reported_and_the_thread_goes_on(cfg, workers) -> None:
    sync = FakeSync(raise_on={0})
    worker = workers(cfg, sync, interval_s=0.05, backoff=SpyBackoff(delay=0.05))
    done: list[Any] = []
    worker.run_now(done_cb=done.append)
    wait_until(lambda: len(sync.starts) >= 2)
    assert done[0].error == INTERNAL_ERROR
    assert worker.alive


# -- stopping ------------------------------------------------------------------------------

def test_stop_ends_a_long_pass_quickly(cfg, workers) -> None:
    sync = FakeSync(seconds=30.0)  # an upload that would take 30 s
    worker = workers(cfg, sync, interval_s=0.05)
    worker.start()
    wait_until(lambda: worker.busy)
    began = time.monotonic()
    assert worker.stop(timeout=2.0)
    assert time.monotonic() - began < 0.2
    assert not worker.alive


def test_stop_while_waiting_a_long_interval_is_immediate(cfg, workers) -> None:
    sync = FakeSync()
    worker = workers(cfg, sync, interval_s=3600.0, first_pass_after_s=3600.0)
    worker.start()
    time.sleep(0.05)
    began = time.monotonic()
    assert worker.stop(timeout=2.0)
    assert time.monotonic() - began < 0.1


def test_stopping_is_final_and_a_late_request_hears_so(cfg, workers) -> None:
    sync = FakeSync()
    worker = workers(cfg, sync, interval_s=3600.0, first_pass_after_s=3600.0)
    worker.start()
    worker.stop()
    done: list[Any] = []
    worker.run_now(done_cb=done.append)
    assert done and done[0].error == "stopped"
    worker.start()
    time.sleep(0.1)
    assert not worker.alive and sync.starts == []


def test_the_thread_is_a_daemon_with_a_lower_priority(cfg, workers) -> None:
    sync = FakeSync()
    worker = workers(cfg, sync, interval_s=3600.0, first_pass_after_s=3600.0)
    worker.start()
    wait_until(lambda: worker.niceness is not None)
    assert worker._thread is not None and worker._thread.daemon
    assert worker._thread.name == "sync-worker"
    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert worker.niceness >= min(ours + 10, 19)
    # Only the worker's thread: the caller's (the UI's) priority is untouched.
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == ours


# -- "Sync now" ------------------------------------------------------------------------------

def test_run_now_runs_on_the_worker_thread_and_returns_at_once(cfg, workers) -> None:
    sync = FakeSync(seconds=0.3, progress_steps=5, results=[Result(acknowledged=2)])
    worker = workers(cfg, sync, interval_s=3600.0, first_pass_after_s=3600.0)
    worker.start()
    progress_threads: list[int] = []
    reports: list[Progress] = []
    done: list[tuple[int, Result]] = []

    def on_progress(report: Progress) -> None:
        progress_threads.append(threading.get_ident())
        reports.append(report)

    began = time.monotonic()
    worker.run_now(on_progress, lambda r: done.append((threading.get_ident(), r)))
    assert time.monotonic() - began < 0.05  # the caller (the UI) never waits for a pass
    wait_until(lambda: done)
    caller = threading.get_ident()
    assert sync.threads == [worker._thread.ident] and caller not in sync.threads
    assert done[0][0] != caller and done[0][1].acknowledged == 2
    assert progress_threads and caller not in progress_threads
    assert [r.sent_bytes for r in reports] == [100, 200, 300, 400, 500]


def test_run_now_starts_a_worker_that_was_never_started(cfg, workers) -> None:
    sync = FakeSync()
    worker = workers(cfg, sync, interval_s=3600.0, first_pass_after_s=3600.0)
    assert not worker.alive
    done: list[Any] = []
    worker.run_now(done_cb=done.append)
    wait_until(lambda: done)
    assert worker.alive and len(sync.starts) == 1


def test_run_now_during_a_pass_joins_it(cfg, workers) -> None:
    sync = FakeSync(seconds=0.3, progress_steps=40)
    worker = workers(cfg, sync, interval_s=3600.0)
    worker.start()
    wait_until(lambda: worker.busy)
    reports: list[Any] = []
    done: list[Any] = []
    worker.run_now(reports.append, done.append)
    wait_until(lambda: done)
    assert len(sync.starts) == 1  # the same pass, not a second one
    assert reports and done[0] is worker.last_result


def test_never_two_passes_at_once(cfg, workers) -> None:
    sync = FakeSync(seconds=0.02)
    worker = workers(cfg, sync, interval_s=0.01)
    worker.start()
    done: list[Any] = []
    lock = threading.Lock()

    def press() -> None:
        for _ in range(5):
            worker.run_now(done_cb=lambda r: (lock.acquire(), done.append(r), lock.release()))
            time.sleep(0.003)

    pressers = [threading.Thread(target=press) for _ in range(8)]
    for thread in pressers:
        thread.start()
    for thread in pressers:
        thread.join()
    wait_until(lambda: len(done) == 40)
    worker.stop()
    assert sync.most_active == 1
    assert len(set(sync.threads)) == 1  # all on the one worker thread
    assert len(sync.starts) < 40  # presses during a pass joined it


# -- what staff read ----------------------------------------------------------------------

def test_describe_result_in_plain_words() -> None:
    from kiosk.i18n import Translator
    from kiosk.sync_worker import describe_result

    en = Translator("en").gettext
    assert describe_result(Result(acknowledged=3, pending=1), en) == (
        "Sync done. Acknowledged: 3. Still to send: 1.")
    assert describe_result(Result(error="network", pending=2, retry_after=5), en) == (
        "No network: will retry. Still to send: 2.")
    # A 401 reads the same whatever code the service gave it.
    assert describe_result(Result(error="unauthorized", revoked=True, pending=4), en) == (
        "This kiosk was revoked by the service: its submissions are kept; export them by"
        " USB. Still to send: 4.")
    assert describe_result(Result(error="not_enrolled"), en) == (
        "Not enrolled: this kiosk has no central service yet (kiosk enrol).")
    assert describe_result(Result(error="weird_code", rejected=1), en) == (
        "Sync failed (weird_code): will retry. Refused by the service: 1.")
    fr = Translator("fr").gettext
    assert describe_result(Result(error="network", pending=2), fr) == (
        "Pas de réseau : nouvel essai plus tard. Encore à envoyer : 2.")
    assert "(kiosk enrol)" in describe_result(Result(error="not_enrolled"),
                                              Translator("ar").gettext)


def test_describe_progress_by_bytes_else_by_submissions() -> None:
    from kiosk.i18n import Translator
    from kiosk.sync_worker import describe_progress

    en = Translator("en").gettext
    assert describe_progress(Progress("heartbeat", 0, 0, 0, 0), en) == (0.0, "Syncing…")
    fraction, text = describe_progress(Progress("upload", 2_500_000, 10_000_000, 1, 4), en)
    assert fraction == 0.25
    assert text == "Sending: 1 of 4 submissions, 2.5 MB of 10.0 MB."
    assert describe_progress(Progress("finalize", 0, 0, 3, 4), en)[0] == 0.75
    assert describe_progress(Progress("upload", 11, 10, 1, 1), en)[0] == 1.0
