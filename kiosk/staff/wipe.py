"""Staff's "wipe": delete every submission this kiosk has not handed over yet.

For a kiosk that is about to be lost, seized or retired, with testimonies on it that
never reached the vetting team. "Shredding" here is deleting the ciphertext: the kiosk
holds no key that opens a sealed part (DESIGN.md, threat model 1), so overwriting the
bytes first would protect nothing more; on flash storage it would not even reach the
same cells.

Which submissions are unsent: every "open" one (a session in the making or lost to a
crash), and every "submitted" one whose outbox state (kiosk/vault/outbox.py) is in
:data:`UNSENT_OUTBOX_STATES`: sealed, uploading, finalizing, or rejected (the service
never took it). A submitted submission without an outbox row (a store from before the
outbox) is unsent too. Acknowledged and purged submissions are the vetting team's
already: the wipe leaves them, and any state it does not name, alone.

Folders in ``outbox/`` named like a submission id but with no store row at all are
unsent by definition (an acknowledged submission has its row), so they go too.
Anything else in ``outbox/`` (a staff member's copy, a tool's left-over) is not the
kiosk's: it is counted and left, as the start-up sweep does.

The store row goes first, then the folder: if the power fails in between, the folder
is left without a row, and the next start-up sweep deletes it. The double
confirmation on the staff screen, and making sure no defender session is open, are the
caller's job. Logged: counts only.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import logs
from ..vault.layout import OUTBOX, fsync_dir, is_submission_folder
from ..vault.store import FINALIZING, OPEN, REJECTED, SEALED, SUBMITTED, UPLOADING, Store

log = logging.getLogger("kiosk.staff")

#: Submission states (``submissions.state``) that may be unsent; a submitted one is
#: unsent only if its outbox state is in :data:`UNSENT_OUTBOX_STATES`.
UNSENT_STATES: frozenset[str] = frozenset({OPEN, SUBMITTED})
#: Outbox states of a submitted submission the service has not acknowledged.
UNSENT_OUTBOX_STATES: frozenset[str] = frozenset({SEALED, UPLOADING, FINALIZING, REJECTED})


def is_unsent(state: str | None, outbox_state: str | None) -> bool:
    if state == OPEN:
        return True
    if state == SUBMITTED:
        return outbox_state is None or outbox_state in UNSENT_OUTBOX_STATES
    return False


@dataclass(frozen=True)
class WipeReport:
    #: Submissions deleted: store rows and/or their folders in outbox/.
    submissions: int
    #: Files deleted from those folders (sealed parts, manifests, .part left-overs).
    files: int
    #: Submissions kept because their state is not an unsent one (already sent).
    kept: int
    #: Entries of outbox/ that are not submission folders, left for staff.
    strays: int
    #: Folders that could not be deleted (their rows are gone; the start-up sweep
    #: retries). Zero when the wipe is complete.
    failed: int = 0

    @property
    def complete(self) -> bool:
        return self.failed == 0


def _count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def wipe_unsent(data_dir: Path, store: Store) -> WipeReport:
    """Delete every unsent submission's rows and its folder under ``outbox/``."""
    outbox = Path(data_dir) / OUTBOX
    known = store.submitted_ids() | store.unsubmitted_ids()
    states = {sid: store.submission_state(sid) for sid in known}
    on_the_way = {row.submission_id: row.state for row in store.outbox_rows()}
    doomed = {sid for sid, state in states.items() if is_unsent(state, on_the_way.get(sid))}
    kept = len(known) - len(doomed)
    for submission_id in sorted(doomed):
        store.delete_submission(submission_id)
    submissions = len(doomed)
    files = strays = failed = 0
    if outbox.is_dir():
        for entry in sorted(outbox.iterdir()):
            if not is_submission_folder(entry):
                # A symlink named like a submission is not one either: never followed.
                strays += 1
                continue
            if entry.name in states and entry.name not in doomed:
                continue  # sent: not the wipe's to delete
            if entry.name not in doomed:
                submissions += 1  # a folder without a row
            count = _count_files(entry)
            try:
                shutil.rmtree(entry)
            except OSError as exc:
                failed += 1
                logs.event(log, "staff_wipe_folder_failed", kind=type(exc).__name__)
                continue
            files += count
        fsync_dir(outbox)  # the deletions must survive the next power cut
    report = WipeReport(submissions=submissions, files=files, kept=kept, strays=strays,
                        failed=failed)
    logs.event(log, "staff_wipe", submissions=submissions, files=files, kept=kept,
               strays=strays, failed=failed)
    return report

