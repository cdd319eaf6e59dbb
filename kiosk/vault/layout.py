"""Where things live under the data directory, and how a new folder is made durable."""

from __future__ import annotations

import os
from pathlib import Path

from ..ids import is_submission_id

#: Sealed submissions, one folder per submission id: outbox/<submission id>/<part>.age
OUTBOX = "outbox"
MANIFEST_NAME = "manifest.json"
#: The sealed manifest's file name inside a submission's folder.
MANIFEST_FILE = f"{MANIFEST_NAME}.age"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dir_durably(directory: Path) -> None:
    """``mkdir -p``, then fsync the parent of every folder it made.

    A folder's entry lives in its parent: without the parent's fsync, a power cut can
    leave a committed store row that names a folder the disk never recorded.
    """
    missing = []
    here = directory
    while not here.exists():
        missing.append(here)
        here = here.parent
    directory.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):
        fsync_dir(made.parent)


def is_submission_folder(path: Path) -> bool:
    """A real folder (not a symlink) named like a submission id (a UUIDv7)."""
    return is_submission_id(path.name) and path.is_dir() and not path.is_symlink()
