"""A reserve of disk space that a take in progress can give up when the disk fills.

A full disk must not cost a defender the answer they are giving. The kiosk keeps a
ballast file (1 MiB of zeros) in its data directory. When a write fails with ENOSPC
the recorder deletes it, which frees room for the take's last Opus pages, the final
encrypted chunk, the rename and the store row. The ballast is made again before the
next take; if it cannot be, the disk is full and the next take is refused up front,
with a message, instead of failing half-way through.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

DEFAULT_SIZE = 1024 * 1024
NAME = ".ballast"
_BLOCK = 64 * 1024


class Ballast:
    def __init__(self, directory: Path, *, size: int = DEFAULT_SIZE) -> None:
        self.path = directory / NAME
        self.size = size

    @property
    def present(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except FileNotFoundError:
            return False

    def ensure(self) -> bool:
        """Make the ballast if it is missing; False when the disk has no room for it."""
        if self.present:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        zeros = bytes(_BLOCK)
        try:
            # Real zeros, not a sparse file or a reservation some filesystems ignore:
            # deleting it must give back blocks that were really taken.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                left = self.size
                while left > 0:
                    left -= os.write(fd, zeros[:min(left, _BLOCK)])
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self.path.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return False
            raise
        return True

    def release(self) -> bool:
        """Delete the ballast; True if that freed space."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
