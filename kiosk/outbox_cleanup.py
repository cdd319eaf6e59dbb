"""The start-up sweep: every part that belongs to no submitted submission is deleted.

A crash or a power cut mid-take leaves ``outbox/<submission>/<part>.age.part``; a
crash mid-session leaves sealed parts of a submission nobody submitted. Neither may
outlive the kiosk's next start (DESIGN.md, data flow): the defender never said
"submit", so the recording is not the project's to keep, and its key is gone anyway.

What a submitted submission holds is kept: the parts its store rows list and its
sealed manifest. Left-overs inside it (a ``.part`` of an interrupted write, a part
dropped by a re-record whose file survived a crash) are deleted too.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import logs
from .ballast import Ballast
from .custody import MANIFEST_NAME, OUTBOX
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
    submissions = files = partial = 0
    for entry in sorted(outbox.iterdir()):
        if entry.name in submitted and entry.is_dir() and not entry.is_symlink():
            keep = {f"{name}.age" for name in store.part_names(entry.name)}
            keep.add(f"{MANIFEST_NAME}.age")
            for path in entry.iterdir():
                if path.name not in keep:
                    files += 1
                    partial += path.name.endswith(".part")
                    _remove(path)
            continue
        if entry.is_dir() and not entry.is_symlink():
            f, p = _count(entry)
            files, partial = files + f, partial + p
        else:
            files += 1
            partial += entry.name.endswith(".part")
        _remove(entry)
        store.delete_submission(entry.name)
        submissions += 1
    # Rows of unsubmitted submissions whose folder never existed or is already gone.
    for submission_id in store.unsubmitted_ids():
        store.delete_submission(submission_id)
        submissions += 1
    fd = os.open(outbox, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)  # the deletions themselves must survive the next power cut
    finally:
        os.close(fd)
    ballast_ok = (ballast or Ballast(data_dir)).ensure()
    report = SweepReport(submissions=submissions, files=files, partial=partial,
                         ballast=ballast_ok)
    logs.event(log, "outbox_swept", submissions=submissions, files=files, partial=partial,
               ballast=ballast_ok)
    return report
