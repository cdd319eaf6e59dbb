"""The start-up sweep: every part that belongs to no submitted submission is deleted.

A crash or a power cut mid-take leaves ``outbox/<submission>/<part>.age.part``; a
crash mid-session leaves sealed parts of a submission nobody submitted. Neither may
outlive the kiosk's next start (DESIGN.md, data flow): the defender never said
"submit", so the recording is not the project's to keep, and its key is gone anyway.

What a submitted submission holds is kept: the parts its store rows list and its
sealed manifest. Left-overs inside it (a ``.part`` of an interrupted write, a part
dropped by a re-record whose file survived a crash) are deleted too.

Only folders named like submission ids are submissions. Anything else in ``outbox/``
(a file, a symlink, a folder with another name: a staff member's copy, a tool's
left-over) is not the kiosk's to judge: it is counted, logged without its name, and
left for staff.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import logs
from .ballast import Ballast
from .layout import MANIFEST_FILE, OUTBOX, fsync_dir, is_submission_folder
from .store import Store

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


def sweep(data_dir: Path, store: Store, *, ballast: Ballast | None = None) -> SweepReport:
    """Apply the start-up rule to ``data_dir/outbox``, then make sure of the ballast."""
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
    if strays:
        logs.event(log, "outbox_strays_left", entries=strays)
    ballast_ok = (ballast or Ballast(data_dir)).ensure()
    report = SweepReport(submissions=submissions, files=files, partial=partial,
                         ballast=ballast_ok, strays=strays)
    logs.event(log, "outbox_swept", submissions=submissions, files=files, partial=partial,
               ballast=ballast_ok)
    return report
