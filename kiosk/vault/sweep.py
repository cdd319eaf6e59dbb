"""The start-up sweep: every part that belongs to no submitted submission is deleted.

A crash or a power cut mid-take leaves ``outbox/<submission>/<part>.age.part``; a
crash mid-session leaves sealed parts of a submission nobody submitted. Neither may
outlive the kiosk's next start (DESIGN.md, data flow): the defender never said
"submit", so the recording is not the project's to keep, and its key is gone anyway.

What a submitted submission holds is kept: the parts its store rows list and its
sealed manifest. Left-overs inside it (a ``.part`` of an interrupted write, a part
dropped by a re-record whose file survived a crash) are deleted too.

Submitted submissions are in the outbox (kiosk/vault/outbox.py), and the sweep also
reconciles it with the disk (:func:`reconcile_outbox`, which ``kiosk sync`` runs too):

* a submitted submission without an outbox row enters it as ``sealed``;
* a pending one (sealed, uploading, finalizing) whose files are missing becomes
  ``rejected`` with ``local_file_missing``, for staff: never silently dropped;
* an acknowledged one past the retention period is purged (its receipt checked
  again first);
* a purged one whose folder is still there (a crash mid-purge, a restored backup)
  loses the folder.

Nothing acknowledged is lost (its row, receipt and hashes stay), nothing
unacknowledged is purged.

Only folders named like submission ids are submissions. Anything else in ``outbox/``
(a file, a symlink, a folder with another name: a staff member's copy, a tool's
left-over) is not the kiosk's to judge: it is counted, logged without its name, and
left for staff.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sync.signing import VerifyKey

from .. import logs
from .ballast import Ballast
from .layout import MANIFEST_FILE, OUTBOX, fsync_dir, is_submission_folder
from .outbox import StoreOutbox, submission_files
from .store import PENDING_STATES, PURGED, Store

#: The default of ``[sync] retention_days`` (kiosk/config.py).
DEFAULT_RETENTION_DAYS = 7.0

log = logging.getLogger("kiosk.outbox")


@dataclass(frozen=True)
class SweepReport:
    #: Unsubmitted submissions removed (their folders and rows).
    submissions: int
    #: Files deleted, sealed or partial.
    files: int
    #: Of which ``.part`` files: takes or manifests interrupted by a crash.
    partial: int
    #: Whether the disk-full ballast is in place after the sweep.
    ballast: bool
    #: Entries of ``outbox/`` that are not submission folders, left for staff.
    strays: int = 0
    #: What :func:`reconcile_outbox` did.
    outbox: ReconcileReport | None = None


@dataclass(frozen=True)
class ReconcileReport:
    #: Submitted submissions that had no outbox row and now are ``sealed``.
    adopted: int = 0
    #: Pending submissions whose files are missing, now ``rejected``.
    missing: int = 0
    #: Acknowledged submissions past the retention period, purged now.
    purged: int = 0
    #: Folders of already purged submissions that were still there, deleted now.
    purged_folders: int = 0


def _count(folder: Path) -> tuple[int, int]:
    files = partial = 0
    for path in folder.rglob("*"):
        if path.is_file() or path.is_symlink():
            files += 1
            partial += path.name.endswith(".part")
    return files, partial


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _pinned_service_key(data_dir: Path) -> VerifyKey | None:
    from ..device import DeviceError, load_enrolment

    try:
        enrolment = load_enrolment(data_dir)
    except DeviceError:
        return None
    return None if enrolment is None else enrolment.service_key


def reconcile_outbox(data_dir: Path, store: Store, *,
                     retention_days: float = DEFAULT_RETENTION_DAYS,
                     service_key: VerifyKey | None = None,
                     now: Callable[[], float] = time.time) -> ReconcileReport:
    """Bring the outbox rows and the files in ``outbox/`` back in line (module doc).

    Safe while the app runs: it touches submitted submissions only. ``service_key``
    (default: the one pinned in ``device.json``) checks receipts before a purge.
    """
    data_dir = Path(data_dir)
    outbox_dir = data_dir / OUTBOX
    adopted = store.adopt_submitted(now=now())
    outbox = StoreOutbox(data_dir, store, now=now)
    missing = purged_folders = 0
    for row in store.outbox_rows(PENDING_STATES):
        files = submission_files(data_dir, store, row.submission_id)
        if not files or not all(f.path.is_file() for f in files):
            outbox.files_missing(row.submission_id)
            missing += 1
    for row in store.outbox_rows((PURGED,)):
        folder = outbox_dir / row.submission_id
        if is_submission_folder(folder):
            shutil.rmtree(folder)
            purged_folders += 1
    if purged_folders:
        fsync_dir(outbox_dir)
    if service_key is None:
        service_key = _pinned_service_key(data_dir)
    purged = outbox.purge_due(retention_days=retention_days, service_key=service_key)
    report = ReconcileReport(adopted=adopted, missing=missing, purged=purged,
                             purged_folders=purged_folders)
    logs.event(log, "outbox_reconciled", adopted=adopted, missing=missing, purged=purged,
               purged_folders=purged_folders)
    return report


def sweep(data_dir: Path, store: Store, *, ballast: Ballast | None = None,
          retention_days: float = DEFAULT_RETENTION_DAYS,
          service_key: VerifyKey | None = None,
          now: Callable[[], float] = time.time) -> SweepReport:
    """Apply the start-up rule to ``data_dir/outbox``, reconcile the outbox, then make
    sure of the ballast. Run it only when no session is open (at start-up)."""
    outbox = data_dir / OUTBOX
    outbox.mkdir(parents=True, exist_ok=True)
    submitted = store.submitted_ids()
    submissions = files = partial = strays = 0
    for entry in sorted(outbox.iterdir()):
        if not is_submission_folder(entry):
            strays += 1
            continue
        if entry.name in submitted:
            keep = {f"{name}.age" for name in store.part_names(entry.name)}
            keep.add(MANIFEST_FILE)
            for path in entry.iterdir():
                if path.name not in keep:
                    files += 1
                    partial += path.name.endswith(".part")
                    _remove(path)
            continue
        f, p = _count(entry)
        files, partial = files + f, partial + p
        _remove(entry)
        store.delete_submission(entry.name)
        submissions += 1
    # Rows of unsubmitted submissions whose folder never existed or is already gone.
    for submission_id in store.unsubmitted_ids():
        store.delete_submission(submission_id)
        submissions += 1
    fsync_dir(outbox)  # the deletions themselves must survive the next power cut
    reconciled = reconcile_outbox(data_dir, store, retention_days=retention_days,
                                  service_key=service_key, now=now)
    if strays:
        logs.event(log, "outbox_strays_left", entries=strays)
    ballast_ok = (ballast or Ballast(data_dir)).ensure()
    report = SweepReport(submissions=submissions, files=files, partial=partial,
                         ballast=ballast_ok, strays=strays, outbox=reconciled)
    logs.event(log, "outbox_swept", submissions=submissions, files=files, partial=partial,
               ballast=ballast_ok)
    return report
