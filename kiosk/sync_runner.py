"""One sync pass for the kiosk: ``sync_once`` (``kiosk sync --once``, the app's worker
and the staff screen's "Sync now" all call it).

A pass: the outbox is reconciled with the files (kiosk/vault/sweep.py), then a
heartbeat (queue depth, free disk, app version, the last error code: nothing
personal), then every pending submission, oldest first, is uploaded and handed over
(sync/client/push.py does that part, over the store through
:class:`kiosk.vault.outbox.StoreOutbox`), then the published catalog is pulled
(kiosk/stories/pull.py: one 304 when nothing is new; a new signed catalog is verified
against the pinned publishing key, its audio downloaded and checked, and installed
atomically), then every acknowledged submission past ``[sync] retention_days`` is
purged, its receipt checked again first.

The catalog comes after the uploads and apart from them: a refused or unreachable
catalog never stops an upload, never changes ``SyncResult.error`` (the uploads' own
outcome), and never touches the installed stories; it goes to the library's
``last_error.json`` for staff, and into ``SyncResult.catalog_error``.

It never raises for network or server trouble: the :class:`SyncResult` says what
happened, and ``sync-state.json`` keeps the last sync time and error for staff. A 401
marks the device revoked there, and later passes do nothing until the kiosk is
enrolled again: its queue is kept whole (for a USB export or a new enrolment).

One pass at a time per data directory (an flock on ``sync.lock``): the app's worker and
a staff member's ``kiosk sync --once`` never upload the same file at once. The lock
dies with its process, so a kill -9 never leaves it held.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from sync.client.enrol import heartbeat
from sync.client.errors import Revoked, Transient
from sync.client.http import Timeouts, make_client
from sync.client.push import Pusher, PushProgress, PushResult

from . import __version__, logs
from .config import KioskConfig
from .device import (
    DeviceError,
    SyncState,
    load_device,
    read_sync_state,
    write_sync_state,
)
from .stories.pull import CatalogOutcome, pull_catalog
from .vault.outbox import IllegalMove, StoreOutbox
from .vault.store import PENDING_STATES, Store
from .vault.sweep import reconcile_outbox

log = logging.getLogger("kiosk.sync")

LOCK_FILE = "sync.lock"
#: Upload outcomes after which the catalog is not tried in the same pass: the network
#: is down or slow (it would only wait out its own timeouts), the service asked to slow
#: down, or the app is stopping.
_NO_CATALOG_AFTER = frozenset({"network", "deadline", "stopped", "rate_limited"})
DISTRIBUTION = "idefendrights-kiosk"


@dataclass(frozen=True)
class SyncProgress:
    phase: str
    #: Bytes of this pass's files that the service holds so far, of ``total_bytes``.
    sent_bytes: int
    total_bytes: int
    #: Submissions dealt with so far, of ``total`` pending at the start.
    done: int
    total: int


@dataclass(frozen=True)
class SyncResult:
    acknowledged: int = 0
    #: Submissions still sealed, uploading or finalizing after the pass.
    pending: int = 0
    rejected: int = 0
    purged: int = 0
    #: None, or a machine code: network, deadline, server_error, locked, rate_limited,
    #: storage_full, bad_receipt, revoked, unauthorized, not_enrolled, device_broken,
    #: busy (another pass runs), stopped...
    error: str | None = None
    revoked: bool = False
    retry_after: float | None = None
    #: Bytes put in PATCH bodies in this pass (what went on the wire, chunks sent
    #: again included).
    sent_bytes: int = 0
    #: The installed catalog's version after the pass (None: none), whether this pass
    #: installed it, and why a catalog was refused or not fetched (a machine code).
    catalog_version: int | None = None
    catalog_installed: bool = False
    catalog_error: str | None = None


def app_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return __version__


def timeouts_of(cfg: KioskConfig) -> Timeouts:
    s = cfg.sync
    return Timeouts(connect_s=s.connect_timeout_s, read_s=s.read_timeout_s,
                    write_s=s.read_timeout_s, pool_s=s.connect_timeout_s,
                    attempt_deadline_s=s.attempt_deadline_s)


@contextmanager
def _pass_lock(data_dir: Path) -> Iterator[bool]:
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _pending_count(store: Store) -> int:
    return len(store.outbox_rows(PENDING_STATES))


def _free_disk(data_dir: Path) -> int | None:
    try:
        return shutil.disk_usage(data_dir).free
    except OSError:
        return None


def _figures(p: PushProgress) -> tuple[int, int, int, int]:
    return p.sent_bytes, p.total_bytes, p.done, p.total


def sync_once(cfg: KioskConfig, store: Store, *,
              progress: Callable[[SyncProgress], None] | None = None,
              transport: httpx.BaseTransport | None = None,
              stop: threading.Event | None = None,
              now: Callable[[], float] = time.time) -> SyncResult:
    """One pass (module doc). Never raises for network or server trouble."""
    data_dir = Path(cfg.data_dir)
    with _pass_lock(data_dir) as locked:
        if not locked:
            return SyncResult(pending=_pending_count(store), error="busy")
        result = _pass(cfg, store, data_dir, progress=progress, transport=transport,
                       stop=stop, now=now)
    logs.event(log, "sync_pass", acknowledged=result.acknowledged, pending=result.pending,
               rejected=result.rejected, purged=result.purged, error=result.error,
               revoked=result.revoked, sent_bytes=result.sent_bytes)
    return result


def _pass(cfg: KioskConfig, store: Store, data_dir: Path, *,
          progress: Callable[[SyncProgress], None] | None,
          transport: httpx.BaseTransport | None, stop: threading.Event | None,
          now: Callable[[], float]) -> SyncResult:
    try:
        device = load_device(data_dir)
    except DeviceError:
        return SyncResult(pending=_pending_count(store), error="device_broken")
    if device is None:
        return SyncResult(pending=_pending_count(store), error="not_enrolled")
    enrolment, signing_key = device
    before = read_sync_state(data_dir)
    if before.revoked:
        return SyncResult(pending=_pending_count(store), error="revoked", revoked=True)
    purged_first = missing = 0
    try:
        # Files against rows first (kiosk/vault/sweep.py): inside the pass lock, so that
        # two processes never purge or reject the same submission at once.
        reconciled = reconcile_outbox(data_dir, store, retention_days=cfg.sync.retention_days,
                                      service_key=enrolment.service_key, now=now)
        purged_first, missing = reconciled.purged, reconciled.missing
    except IllegalMove:
        pass  # a row changed meanwhile (a staff wipe): the pass goes on from the store
    started = now()
    write_sync_state(data_dir, SyncState(before.last_sync_at, before.last_error, False,
                                         started))

    last = [PushProgress("heartbeat", 0, 0, 0, 0)]

    def report(p: PushProgress) -> None:
        if p.phase == "upload":
            last[0] = p
        if progress is not None:
            progress(SyncProgress(p.phase, p.sent_bytes, p.total_bytes, p.done, p.total))

    timeouts = timeouts_of(cfg)
    outbox = StoreOutbox(data_dir, store, now=now)
    error: str | None = None
    revoked = False
    retry_after: float | None = None
    acknowledged = rejected = sent = 0
    with make_client(enrolment.server_url, token=enrolment.token, transport=transport,
                     timeouts=timeouts) as client:
        report(PushProgress("heartbeat", 0, 0, 0, 0))
        try:
            status = heartbeat(client, timeouts=timeouts, queue_depth=_pending_count(store),
                               free_disk_bytes=_free_disk(data_dir),
                               app_version=app_version(), last_error=before.last_error)
            if status != 204:
                logs.event(log, "heartbeat_refused", status=status)
        except Revoked as exc:
            error, revoked = exc.code, True
        except Transient as exc:
            error, retry_after = exc.code, exc.retry_after
        if error is None:
            pusher = Pusher(client, device_id=enrolment.device_id, signing_key=signing_key,
                            service_key=enrolment.service_key,
                            chunk_bytes=cfg.sync.chunk_bytes,
                            max_chunk_bytes=cfg.sync.max_chunk_bytes, timeouts=timeouts, stop=stop,
                            progress=report)
            try:
                pushed = pusher.run(outbox)
            except IllegalMove:
                # A row changed under the pass (a staff wipe meanwhile): nothing is lost,
                # the next pass starts from what the store says now.
                pushed = PushResult(error="outbox_changed",
                                    sent_bytes=pusher.counters.sent_bytes)
            acknowledged, rejected, sent = pushed.acknowledged, pushed.rejected, pushed.sent_bytes
            error, revoked, retry_after = pushed.error, pushed.revoked, pushed.retry_after
            for submission_id, code in pushed.rejections:
                logs.event(log, "sync_rejected", submission=submission_id, error=code)
        catalog: CatalogOutcome | None = None
        if not revoked and error not in _NO_CATALOG_AFTER:
            report(PushProgress("catalog", *_figures(last[0])))
            try:
                catalog = pull_catalog(cfg, client, timeouts=timeouts, stop=stop)
            except Exception as exc:  # a bug in the catalog code must not skip the purge
                logs.event(log, "catalog_pull_crashed", error=type(exc).__name__)
                log.debug("catalog pull crashed", exc_info=True)
                catalog = CatalogOutcome("failed", error="internal_error")
            if catalog.revoked:
                error, revoked = "revoked", True
    purged = purged_first
    if not revoked:
        # Local work only: a pass that lost the network still purges what is due.
        report(PushProgress("purge", *_figures(last[0])))
        purged += outbox.purge_due(retention_days=cfg.sync.retention_days,
                                   service_key=enrolment.service_key)
    finished = now()
    write_sync_state(data_dir, SyncState(
        last_sync_at=finished if error is None else before.last_sync_at,
        last_error=error, revoked=revoked, last_attempt_at=started))
    pending = _pending_count(store)
    report(PushProgress("done", *_figures(last[0])))
    return SyncResult(acknowledged=acknowledged, pending=pending, rejected=rejected + missing,
                      purged=purged, error=error, revoked=revoked, retry_after=retry_after,
                      sent_bytes=sent,
                      catalog_version=catalog.version if catalog is not None else None,
                      catalog_installed=catalog is not None and catalog.installed,
                      catalog_error=catalog.error if catalog is not None else None)
