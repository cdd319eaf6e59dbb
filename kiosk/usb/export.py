"""``kiosk export DIR``: the unsent sealed submissions, still sealed, onto a stick.

Every pending outbox row (sealed, uploading, finalizing: not acknowledged, purged or
rejected) goes into one new bundle (sync/bundle.py) with the index the network path
would send (:func:`sync.client.push.sign_index`, signed by the device key) and the
device's status (what the heartbeat says: counts and codes). Each sealed file is copied
byte for byte while it is hashed, against the size and SHA-256 the store vouches for:
a damaged file is left out of the bundle and named, never carried.

The bundle is written under a dot-name and renamed into place at the end, so a stick
pulled out half way leaves nothing that looks whole; only then are the rows marked
``exported_at``. That mark changes no state: the submissions stay pending, the network
may still take them, and nothing is purged before a verified receipt comes back by
either path (kiosk/vault/outbox.py).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sync import bundle
from sync.client.push import Pending, sign_index
from sync.signing import SigningKey

from .. import logs
from ..config import KioskConfig
from ..device import DeviceError, load_device, read_sync_state
from ..sync_runner import _pass_lock, app_version
from ..vault.outbox import StoreOutbox
from ..vault.store import Store
from .progress import ProgressFn, UsbProgress

log = logging.getLogger("kiosk.usb")


@dataclass(frozen=True)
class ExportResult:
    #: None, or a code: not_enrolled, device_broken, busy, stick_error, nothing_pending.
    error: str | None
    exported: int = 0
    total_bytes: int = 0
    #: Submissions left out because a sealed file differs from the store (or is gone).
    damaged: tuple[str, ...] = ()
    bundle: Path | None = None
    #: For staff: what happened, in one sentence (no personal data: counts, a path).
    detail: str = ""
    submissions: tuple[str, ...] = field(default=())


def export_bundle(cfg: KioskConfig, store: Store, folder: Path, *,
                  progress: ProgressFn | None = None,
                  now: Callable[[], float] = time.time) -> ExportResult:
    """Write one bundle of every pending submission under ``folder`` (module doc)."""
    data_dir = Path(cfg.data_dir)
    try:
        device = load_device(data_dir)
    except DeviceError as exc:
        return ExportResult("device_broken", detail=str(exc))
    if device is None:
        return ExportResult("not_enrolled",
                            detail="this kiosk is not enrolled: its submissions cannot be"
                                   " signed for the service (kiosk enrol)")
    enrolment, signing_key = device
    with _pass_lock(data_dir) as locked:
        if not locked:
            return ExportResult("busy", detail="a sync is running: try again in a moment")
        result = _export(cfg, store, Path(folder), enrolment.device_id, signing_key,
                         progress=progress, now=now)
    logs.event(log, "usb_export", error=result.error, exported=result.exported,
               damaged=len(result.damaged), bytes=result.total_bytes,
               bundle=result.bundle.name if result.bundle else None)
    return result


def _export(cfg: KioskConfig, store: Store, folder: Path, device_id: str,
            signing_key: SigningKey,
            *, progress: ProgressFn | None, now: Callable[[], float]) -> ExportResult:
    data_dir = Path(cfg.data_dir)
    outbox = StoreOutbox(data_dir, store, now=now)
    items = outbox.pending()
    if not items:
        return ExportResult("nothing_pending", detail="nothing to export: every submission"
                                                      " has reached the service")
    if not folder.is_dir():
        return ExportResult("stick_error", detail=f"{folder} is not a folder (is the stick"
                                                  " mounted?)")
    total = sum(f.size for item in items for f in item.files)
    done_bytes = 0
    done = 0

    def report() -> None:
        if progress is not None:
            progress(UsbProgress("export", done_bytes, total, done, len(items)))

    def landed(n: int) -> None:
        nonlocal done_bytes
        done_bytes += n
        report()

    started = now()
    bundle_id = bundle.new_bundle_id(started)
    temp: Path | None = None
    exported: list[str] = []
    damaged: list[str] = []
    try:
        parent = bundle.device_dir(folder, device_id)
        temp = bundle.new_temp_dir(parent, bundle_id)
        subs = temp / bundle.SUBMISSIONS
        subs.mkdir()
        report()
        for item in items:
            target = subs / item.submission_id
            target.mkdir()
            if _copy_submission(item, target, landed):
                signed = sign_index(item, device_id=device_id, signing_key=signing_key)
                bundle.write_file(target / bundle.INDEX_FILE, bundle.signed_json("index",
                                                                                 signed))
                bundle.fsync_dir(target)
                exported.append(item.submission_id)
            else:
                shutil.rmtree(target)
                damaged.append(item.submission_id)
                logs.event(log, "usb_export_damaged", submission=item.submission_id)
            done += 1
            report()
        bundle.fsync_dir(subs)
        state = read_sync_state(data_dir)
        status = bundle.Status(device_id, started, app_version(), len(items),
                               _free_disk(data_dir), state.last_error)
        bundle.write_file(temp / bundle.STATUS_FILE, status.to_bytes())
        # bundle.json last: what it lists is on the stick already.
        bundle.write_file(temp / bundle.BUNDLE_FILE, json.dumps({
            "v": bundle.FORMAT_VERSION, "device_id": device_id, "bundle_id": bundle_id,
            "created_at": started, "submissions": exported}).encode("utf-8"))
        final = parent / bundle_id
        bundle.swap_in(temp, final)  # the commit point: the bundle is whole from here
        temp = None
    except OSError as exc:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)  # a pulled stick: may fail, skipped anyway
        return ExportResult("stick_error", exported=0, total_bytes=total,
                            detail=f"writing to the stick failed ({exc.strerror or exc});"
                                   " nothing was marked exported, try again")
    except BaseException:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
        raise
    store.mark_exported(exported, now=now())
    done_bytes = total
    report()
    return ExportResult(None, exported=len(exported), total_bytes=total,
                        damaged=tuple(damaged), bundle=final,
                        detail=f"exported {len(exported)} submissions to {final}",
                        submissions=tuple(exported))


def _copy_submission(item: Pending, target: Path, landed: Callable[[int], None]) -> bool:
    """Copy each sealed file, checked against the store; False if one differs or is gone."""
    for file in item.files:
        try:
            size, sha256 = bundle.copy_hashed(file.path, target / file.name, limit=file.size,
                                              progress=landed)
        except FileNotFoundError:
            return False
        if size != file.size or sha256 != file.sha256:
            return False
    return True


def _free_disk(data_dir: Path) -> int | None:
    try:
        return shutil.disk_usage(data_dir).free
    except OSError:
        return None
