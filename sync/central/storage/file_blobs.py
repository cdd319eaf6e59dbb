"""Blobs as files under the data directory: ``uploads/<id>``, ``parts/<sid>/<sha256>``,
``public/<story_id>/<sha256>.ogg``.

Whole blobs are written as temp file, fsync, rename, fsync of the directory, so a power
cut leaves the old state or the new one. Appends fsync before they return and cut the
file back to the expected offset when anything fails, so nothing past the durable
offset stays behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from sync.durable import fsync_dir

from .base import (
    BlobMissing,
    ChecksumMismatch,
    OffsetMismatch,
    StorageError,
    append_all,
)

_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
# UUID text: hex and dashes only, so it is safe as a directory name.
_SUBMISSION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A catalog story id (sync/catalog.py): letters, digits, '-' and '_', never a dot.
_STORY_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
READ_SIZE = 1024 * 1024


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    # Keys come from the service, but a path is made from them: refuse anything odd.
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise StorageError(f"not a valid {what}")
    return value


def _read_range(path: Path, start: int, end: int | None) -> Iterator[bytes]:
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise BlobMissing("no such blob") from None
    with handle:
        handle.seek(start)
        left = None if end is None else max(0, end - start)
        while left is None or left > 0:
            data = handle.read(READ_SIZE if left is None else min(READ_SIZE, left))
            if not data:
                return
            if left is not None:
                left -= len(data)
            yield data


class FileAppend:
    """Bytes going straight into an upload file at its committed offset.

    Written once, where they will stay: no spool file copied afterwards (the chunk's
    checksum is checked on the bytes as they arrive, and :meth:`abort` cuts them off
    again if it fails). Not thread-safe: one writer, which the upload's lock ensures.
    """

    def __init__(self, fd: int, offset: int) -> None:
        self._fd = fd
        self.start = offset
        self.size = offset

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, self.size)
            view = view[n:]
            self.size += n

    def commit(self) -> int:
        """Make every written byte durable and return the new size; closes."""
        try:
            # fdatasync, not fsync: it still makes the data and the new file size
            # durable (what a read needs), but skips the timestamps, whose journal
            # commit made each following write wait: 16 chunks of 4 MiB took 171 ms
            # with fsync, 41 ms with fdatasync on this machine's ext4.
            os.fdatasync(self._fd)
        except BaseException:
            self.abort()
            raise
        os.close(self._fd)
        self._fd = -1
        return self.size

    def abort(self) -> None:
        """Cut the file back to where this append started; closes. Safe to repeat."""
        if self._fd < 0:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.start)
                os.fdatasync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1


class FileBlobStore:
    """:class:`~.base.BlobStore` on a local file system."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploads = root / "uploads"
        self.parts = root / "parts"
        self.public = root / "public"
        for folder in (self.uploads, self.parts, self.public):
            folder.mkdir(parents=True, exist_ok=True)

    # -- uploads --------------------------------------------------------------------------
    def _upload(self, upload_id: str) -> Path:
        return self.uploads / _check(_UPLOAD_ID, upload_id, "upload id")

    def create_upload(self, upload_id: str) -> None:
        path = self._upload(upload_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.uploads)

    def upload_size(self, upload_id: str) -> int | None:
        try:
            return self._upload(upload_id).stat().st_size
        except FileNotFoundError:
            return None

    def open_append(self, upload_id: str, expected_offset: int) -> FileAppend:
        path = self._upload(upload_id)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            raise OffsetMismatch(0) from None
        try:
            size = os.fstat(fd).st_size
            if size < expected_offset:
                raise OffsetMismatch(size)
            if size > expected_offset:
                # Left by a crash or a failed append: never part of the upload.
                os.ftruncate(fd, expected_offset)
        except BaseException:
            os.close(fd)
            raise
        return FileAppend(fd, expected_offset)

    def append_upload(self, upload_id: str, expected_offset: int,
                      chunks: Iterable[bytes]) -> int:
        return append_all(self.open_append(upload_id, expected_offset), chunks)

    def truncate_upload(self, upload_id: str, size: int) -> None:
        path = self._upload(upload_id)
        fd = os.open(path, os.O_RDWR)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_upload(self, upload_id: str, start: int = 0,
                    end: int | None = None) -> Iterator[bytes]:
        return _read_range(self._upload(upload_id), start, end)

    def delete_upload(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._upload(upload_id).unlink()
            fsync_dir(self.uploads)

    def list_uploads(self) -> list[str]:
        return sorted(p.name for p in self.uploads.iterdir() if _UPLOAD_ID.fullmatch(p.name))

    def stray_upload_files(self) -> list[str]:
        """Names in ``uploads/`` that are no upload id (reconciliation removes them)."""
        return sorted(p.name for p in self.uploads.iterdir()
                      if not _UPLOAD_ID.fullmatch(p.name))

    def remove_stray_upload_file(self, name: str) -> None:
        target = self.uploads / name
        if "/" in name or name in (".", "..") or not target.is_file():
            return
        target.unlink()
        fsync_dir(self.uploads)

    # -- parts ----------------------------------------------------------------------------
    def _part(self, submission_id: str, sha256: str) -> Path:
        return (self.parts / _check(_SUBMISSION_ID, submission_id, "submission id")
                / _check(_SHA256, sha256, "sha256"))

    def put_part_from_upload(self, upload_id: str, submission_id: str, sha256: str) -> None:
        target = self._part(submission_id, sha256)
        if target.is_file():
            return
        folder = target.parent
        made = not folder.exists()
        folder.mkdir(exist_ok=True)
        if made:
            fsync_dir(self.parts)
        temp = folder / f".tmp-{secrets.token_hex(8)}"
        try:
            try:
                # A finished upload never changes again, its bytes were fsynced as they
                # were appended and hashed when it finished (the caller checked that
                # hash against the index): a hard link makes it the part without
                # reading or writing it a second time.
                os.link(self._upload(upload_id), temp)
                # Its age is the time it became a part (start-up reconciliation keeps
                # young unreferenced parts for a grace period).
                os.utime(temp)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                self._copy_checked(upload_id, temp, sha256)  # no hard links here
            os.replace(temp, target)
            fsync_dir(folder)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def _copy_checked(self, upload_id: str, temp: Path, sha256: str) -> None:
        digest = hashlib.sha256()
        with temp.open("xb") as out:
            for chunk in self.read_upload(upload_id):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            raise StorageError("upload bytes do not hash to the part's SHA-256")

    def part_size(self, submission_id: str, sha256: str) -> int | None:
        try:
            return self._part(submission_id, sha256).stat().st_size
        except FileNotFoundError:
            return None

    def read_part(self, submission_id: str, sha256: str, start: int = 0,
                  end: int | None = None) -> Iterator[bytes]:
        return _read_range(self._part(submission_id, sha256), start, end)

    def list_parts(self) -> list[tuple[str, str, float]]:
        out = []
        for folder in self.parts.iterdir():
            if not folder.is_dir() or not _SUBMISSION_ID.fullmatch(folder.name):
                continue
            for blob in folder.iterdir():
                if _SHA256.fullmatch(blob.name):
                    out.append((folder.name, blob.name, blob.stat().st_mtime))
        return sorted(out)

    def stray_part_temps(self) -> list[Path]:
        """Temp files a crash left in ``parts/`` (never referenced by anything)."""
        return [p for folder in self.parts.iterdir() if folder.is_dir()
                for p in folder.iterdir() if p.name.startswith(".tmp-")]

    def stray_public_temps(self) -> list[Path]:
        """Temp files a crash left in ``public/`` (never referenced by anything)."""
        return [p for folder in self.public.iterdir() if folder.is_dir()
                for p in folder.iterdir() if p.name.startswith(".tmp-")]

    def delete_part(self, submission_id: str, sha256: str) -> None:
        target = self._part(submission_id, sha256)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
            fsync_dir(target.parent)
        with contextlib.suppress(OSError):
            target.parent.rmdir()  # only when empty

    # -- public audio -------------------------------------------------------------------
    def _public(self, story_id: str, sha256: str) -> Path:
        return (self.public / _check(_STORY_ID, story_id, "story id")
                / f"{_check(_SHA256, sha256, 'sha256')}.ogg")

    def put_public_audio(self, story_id: str, sha256: str, chunks: Iterable[bytes]) -> int:
        target = self._public(story_id, sha256)
        folder = target.parent
        made = not folder.exists()
        folder.mkdir(exist_ok=True)
        if made:
            fsync_dir(self.public)
        temp = folder / f".tmp-{secrets.token_hex(8)}"
        digest = hashlib.sha256()
        size = 0
        try:
            with temp.open("xb") as out:
                for chunk in chunks:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            if digest.hexdigest() != sha256:
                raise ChecksumMismatch("the audio does not hash to its SHA-256")
            if target.is_file():
                return target.stat().st_size  # same key, same content: never overwritten
            os.replace(temp, target)
            fsync_dir(folder)
            return size
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()

    def public_audio_size(self, story_id: str, sha256: str) -> int | None:
        try:
            return self._public(story_id, sha256).stat().st_size
        except FileNotFoundError:
            return None

    def read_public_audio(self, story_id: str, sha256: str, start: int = 0,
                          end: int | None = None) -> Iterator[bytes]:
        return _read_range(self._public(story_id, sha256), start, end)
