"""Writing age files: the streaming writer for live recording, and one-shot helpers.

What reaches the disk is ciphertext only: the header and nonce first, then
each 64 KiB chunk once it is sealed. The writer holds at most one chunk of
plaintext, and has to hold a full one back until more data arrives, because
only then does it know that the chunk is not the final one.

A failed disk write (ENOSPC) leaves the ``.part`` file cut back to the last
complete chunk and the plaintext of the failed chunk still in memory, so the
caller can free space and carry on. The chunk's plaintext is then fixed: a
ChaCha20-Poly1305 nonce must never seal two different plaintexts, and the
failed write may have put part of the first sealing on the disk.

Once ``close()`` has moved the ``.part`` into place, the sealed file is the
caller's: nothing here deletes it any more, whatever fails after that.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import io
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .armor import ArmorEncoder
from .header import build_header
from .scrypt import STANZA_TYPE as SCRYPT_TYPE
from .scrypt import ScryptRecipient
from .stanza import Recipient
from .stream import (
    CHUNK_SIZE,
    ENC_CHUNK_SIZE,
    FILE_KEY_SIZE,
    PAYLOAD_NONCE_SIZE,
    ChunkSealer,
    payload_key,
)
from .streamio import fill, write_all

__all__ = ["EnvelopeWriter", "SealedFile", "encrypt_stream", "seal_bytes"]


@dataclass(frozen=True)
class SealedFile:
    path: Path
    #: Size of the age file in bytes.
    size: int
    #: SHA-256 (hex) of the whole age file, computed while it was written.
    sha256: str


def _coerce(recipient: Recipient | str) -> Recipient:
    if isinstance(recipient, str):
        from .keys import parse_recipient

        return parse_recipient(recipient)
    return recipient


def _new_file_key() -> bytearray:
    """A fresh random file key, in a buffer that can be zeroed when it is dropped."""
    # Python cannot promise that no transient copy of the key exists: os.urandom
    # returns an immutable bytes object, freed (not zeroed) as soon as it is
    # copied here, and the libraries it is passed to make their own copies. What
    # we can do is keep that bytes object alive for one expression only.
    return bytearray(os.urandom(FILE_KEY_SIZE))


def _zero(buf: bytearray) -> None:
    buf[:] = bytes(len(buf))  # same length: overwritten in place, never reallocated


def _prepare(recipients: Iterable[Recipient | str], allow_mixed: bool) -> tuple[bytearray, bytes]:
    """Choose a file key and build the header for ``recipients``.

    The caller owns the returned key buffer and must zero it (``_zero``).
    """
    recipients = [_coerce(r) for r in recipients]
    if not recipients:
        raise ValueError("at least one recipient is required")
    if len(recipients) > 1 and any(isinstance(r, ScryptRecipient) for r in recipients):
        raise ValueError("a passphrase (scrypt) recipient must be the file's only recipient")
    kinds = {bool(getattr(r, "post_quantum", False)) for r in recipients}
    if len(kinds) > 1 and not allow_mixed:
        # As in age: adding a classical recipient would silently undo the
        # post-quantum protection of the others.
        raise ValueError(
            "refusing to mix post-quantum and non-post-quantum recipients"
            " (pass allow_mixed=True to do it anyway)"
        )
    file_key = _new_file_key()
    try:
        stanzas = [stanza for r in recipients for stanza in r.wrap(file_key)]
        if len(stanzas) > 1 and any(s.type == SCRYPT_TYPE for s in stanzas):
            # age spec: an scrypt stanza is always alone (readers reject the file).
            raise ValueError("a passphrase (scrypt) recipient must be the file's only recipient")
        return file_key, build_header(stanzas, file_key)
    except BaseException:
        _zero(file_key)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# renameat2(2) with RENAME_NOREPLACE moves a file into place only if nothing is
# there, atomically: a check first (os.path.lexists) and os.rename after would let
# a file that appears in between be replaced. The constants are from <fcntl.h>
# and <linux/fs.h>.
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_Renameat2 = Callable[[int, bytes, int, bytes, int], int]


def _load_renameat2() -> _Renameat2 | None:
    """libc's renameat2 (glibc 2.28+, musl 1.2.2+), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    func.restype = ctypes.c_int
    return func


# Tests set this to None to exercise the link() fallback.
_renameat2: _Renameat2 | None = _load_renameat2()


def _move_noreplace(src: Path, dst: Path) -> bool:
    """Give ``src``'s file the name ``dst``, never replacing a file already there.

    Raises FileExistsError if ``dst`` exists. Returns True if ``src`` was renamed,
    False if ``dst`` was made a hard link and ``src`` still has to be unlinked.
    """
    if _renameat2 is not None:
        rc = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE)
        if rc == 0:
            return True
        err = ctypes.get_errno()
        # ENOSYS: a kernel before 3.15; EINVAL: a filesystem without the flag.
        # Both mean "try another way"; anything else is the answer.
        if err not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    # link() fails with EEXIST rather than replace, atomically, like the above.
    os.link(src, dst)
    return False


class EnvelopeWriter:
    """Seal a stream of plaintext to ``path`` via ``path + ".part"``.

    ``write()`` accepts any amount; ``close()`` writes the final chunk,
    fsyncs, renames the ``.part`` file into place (never over an existing file)
    and fsyncs the directory. Not thread-safe: one producer thread owns it.

    The file key stays here, in a buffer zeroed on :meth:`drop_key`,
    :meth:`abort` or garbage collection, until review is over; ``close()``
    keeps it, because review comes after the take is sealed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        recipients: Iterable[Recipient | str],
        *,
        allow_mixed: bool = False,
    ) -> None:
        self.path = Path(path)
        self.part_path = self.path.with_name(self.path.name + ".part")
        self._fd = -1
        self._state = "open"  # open -> closing -> closed, or aborted
        file_key, header = _prepare(recipients, allow_mixed)
        self._file_key: bytearray | None = file_key
        self._sealer: ChunkSealer | None = None
        self._buf = bytearray(CHUNK_SIZE)
        self._view = memoryview(self._buf)
        self._fill = 0  # plaintext bytes held in _buf
        self._index = 0  # STREAM counter of the next chunk
        self._offset = 0  # bytes of ciphertext safely in the file
        self._accepted = 0  # plaintext bytes taken by write()
        self._hash = hashlib.sha256()
        self._final_done = False
        self._renamed = False
        # After the link() fallback the sealed file is also still named .part.
        self._part_linked = False
        self._sealed: SealedFile | None = None
        # Tests replace this to inject ENOSPC.
        self._pwrite = os.pwrite
        try:
            nonce = os.urandom(PAYLOAD_NONCE_SIZE)
            self._sealer = ChunkSealer(payload_key(file_key, nonce))
            # An early, friendly refusal; close() does not rely on it.
            if os.path.lexists(self.path):
                raise FileExistsError(f"{self.path} already exists")
            self._fd = os.open(
                self.part_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600
            )
        except BaseException:
            # Nothing of ours is on the disk (an existing .part is someone else's).
            self._state = "aborted"
            self.drop_key()
            self._wipe()
            raise
        try:
            self._commit(memoryview(header + nonce))
        except BaseException:
            self._discard()
            raise

    # -- properties -------------------------------------------------------------

    @property
    def file_key(self) -> bytearray:
        """A new copy of the 16-byte file key: it opens this file without any identity.

        Each call returns a fresh ``bytearray`` that belongs to the caller, who
        zeroes it when review is over; :meth:`drop_key` does not touch it.
        """
        if self._file_key is None:
            raise ValueError("the file key was dropped (drop_key() or abort())")
        return bytearray(self._file_key)

    def drop_key(self) -> None:
        """Zero and forget the writer's own file key (review is over); the file stays."""
        key, self._file_key = self._file_key, None
        if key is not None:
            _zero(key)

    @property
    def renamed(self) -> bool:
        """True once the sealed file is in place under its final name.

        From then on the file is kept whatever happens, :meth:`abort` included;
        a ``close()`` that raised after this point only failed to make the
        directory entry durable, and calling it again retries just that.
        """
        return self._renamed

    @property
    def sealed_file(self) -> SealedFile | None:
        """The sealed file once it is in place (:attr:`renamed`), else None.

        Known even when the directory fsync after the rename failed: the file is
        complete, and a recorder keeps it rather than lose what was said.
        """
        if not self._renamed:
            return None
        return SealedFile(path=self.path, size=self._offset, sha256=self._hash.hexdigest())

    @property
    def bytes_accepted(self) -> int:
        """Plaintext bytes taken so far; after a failed write(), how much of it was kept."""
        return self._accepted

    @property
    def closed(self) -> bool:
        return self._state in ("closed", "aborted")

    # -- writing --------------------------------------------------------------

    def _commit(self, data: memoryview, *, sync: bool = False) -> None:
        """Append ``data`` at the end of the good ciphertext, or leave the file as it was."""
        try:
            done = 0
            while done < len(data):
                done += self._pwrite(self._fd, data[done:], self._offset + done)
            if sync:
                os.fsync(self._fd)
        except BaseException:
            # Never leave a partial chunk behind: the next sealing goes at
            # _offset and a shorter final chunk would leave garbage after it.
            try:
                os.ftruncate(self._fd, self._offset)
            except OSError:
                self._state = "broken"
            raise
        self._hash.update(data)
        self._offset += len(data)

    def _seal_chunk(self, plaintext: memoryview) -> None:
        assert self._sealer is not None
        self._commit(self._sealer.seal(self._index, plaintext, last=False))
        self._index += 1

    def _check_writable(self) -> None:
        if self._state == "closing":
            # The final chunk may already have been sealed (and partly
            # written); its plaintext must not change now.
            raise ValueError("close() was called; only close() or abort() may follow")
        if self._state != "open":
            raise ValueError(f"writer is {self._state}")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Take ``data``. On OSError, :attr:`bytes_accepted` says how much was kept."""
        self._check_writable()
        src = memoryview(data).cast("B")
        pos, end = 0, len(src)
        while pos < end:
            if self._fill == CHUNK_SIZE:
                # More data has come, so the held chunk is not the last one.
                self._seal_chunk(self._view)
                self._fill = 0
            elif self._fill == 0 and end - pos > CHUNK_SIZE:
                # A whole non-final chunk is in the caller's buffer: seal it
                # from there without copying it.
                piece = src[pos : pos + CHUNK_SIZE]
                try:
                    self._seal_chunk(piece)
                except BaseException:
                    # Keep the chunk: it is bound to its nonce now.
                    self._view[:] = piece
                    self._fill = CHUNK_SIZE
                    self._accepted += CHUNK_SIZE
                    raise
                pos += CHUNK_SIZE
                self._accepted += CHUNK_SIZE
            else:
                take = min(CHUNK_SIZE - self._fill, end - pos)
                self._view[self._fill : self._fill + take] = src[pos : pos + take]
                self._fill += take
                pos += take
                self._accepted += take

    def close(self) -> SealedFile:
        """Finish the file; safe to call again after it raised (e.g. once space is freed).

        If a file appeared under :attr:`path` meanwhile, raises FileExistsError and
        leaves it alone; the sealed ``.part`` is kept for the caller.
        """
        if self._state == "closed":
            assert self._sealed is not None
            return self._sealed
        if self._state not in ("open", "closing"):
            raise ValueError(f"writer is {self._state}")
        self._state = "closing"
        if not self._final_done:
            assert self._sealer is not None
            self._commit(
                self._sealer.seal(self._index, self._view[: self._fill], last=True), sync=True
            )
            self._final_done = True
            self._wipe()
            fd, self._fd = self._fd, -1
            os.close(fd)
        if not self._renamed:
            try:
                self._part_linked = not _move_noreplace(self.part_path, self.path)
            except FileExistsError:
                # Someone else's file: never replace it. The .part stays, sealed,
                # for the caller to move elsewhere or to abort().
                raise FileExistsError(
                    errno.EEXIST,
                    "a file appeared there while the envelope was written; not replacing it",
                    str(self.path),
                ) from None
            self._renamed = True
        if self._part_linked:
            self.part_path.unlink(missing_ok=True)
            self._part_linked = False
        _fsync_dir(self.path.parent)
        self._state = "closed"
        self._sealed = SealedFile(path=self.path, size=self._offset, sha256=self._hash.hexdigest())
        return self._sealed

    def abort(self) -> None:
        """Discard what is not sealed: close and delete the ``.part``, forget the key.

        Once the sealed file is in place (:attr:`renamed`) it is kept: a failed
        directory fsync must not cost the person their recording. A caller that
        does not want the file deletes it itself.
        """
        if self._state in ("closed", "aborted"):
            return
        self._discard()

    def _discard(self) -> None:
        self._state = "aborted"
        self.drop_key()
        self._wipe()
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)
        if not self._renamed or self._part_linked:
            # Either the unsealed .part, or a second name of the sealed file.
            self.part_path.unlink(missing_ok=True)
            self._part_linked = False

    def _wipe(self) -> None:
        # Python cannot promise that no copy exists elsewhere, but the
        # buffers we own need not keep plaintext or keys around.
        self._view[:] = bytes(CHUNK_SIZE)
        self._fill = 0
        if self._sealer is not None:
            self._sealer.wipe()
            self._sealer = None

    def __enter__(self) -> EnvelopeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # An abandoned writer leaves its .part for the start-up sweep, but no key:
        # nobody can ask this writer for it any more.
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1
        if getattr(self, "_file_key", None) is not None:
            self.drop_key()
        if hasattr(self, "_view") and self._state != "closed":
            self._wipe()


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    recipients: Iterable[Recipient | str],
    *,
    allow_mixed: bool = False,
    armor: bool = False,
) -> int:
    """Seal everything read from ``src`` into ``dst``; return the bytes written.

    With ``armor=True`` the output is ASCII-armored (``age -a``), and the
    count is of armored bytes.
    """
    if armor:
        encoder = ArmorEncoder(dst)
        encrypt_stream(src, encoder, recipients, allow_mixed=allow_mixed)  # type: ignore[arg-type]
        encoder.close()
        return encoder.written
    file_key, header = _prepare(recipients, allow_mixed)
    try:
        nonce = os.urandom(PAYLOAD_NONCE_SIZE)
        sealer = ChunkSealer(payload_key(file_key, nonce))
    finally:
        _zero(file_key)  # nobody reviews a one-shot file: the sealer has all it needs
    written = len(header) + PAYLOAD_NONCE_SIZE
    readinto = getattr(src, "readinto", None)
    if readinto is None:

        def readinto(buf: memoryview) -> int:
            data = src.read(len(buf))
            buf[: len(data)] = data
            return len(data)

    # One byte of lookahead tells whether a full chunk is the final one.
    buf = bytearray(CHUNK_SIZE + 1)
    view = memoryview(buf)
    chunk = view[:CHUNK_SIZE]
    after_first = view[1:]
    index = 0
    try:
        write_all(dst, memoryview(header + nonce))
        have = fill(readinto, view)
        while have > CHUNK_SIZE:
            # More data follows, so this is a full, non-final chunk.
            write_all(dst, sealer.seal(index, chunk, last=False))
            written += ENC_CHUNK_SIZE
            index += 1
            buf[0] = buf[CHUNK_SIZE]
            got = readinto(after_first) or 0  # usually the whole chunk at once
            have = 1 + got
            if got and have <= CHUNK_SIZE:
                have += fill(readinto, view[have:])
        sealed = sealer.seal(index, view[:have], last=True)
        write_all(dst, sealed)
        return written + len(sealed)
    finally:
        view[:] = bytes(len(buf))
        sealer.wipe()


def seal_bytes(
    data: bytes,
    recipients: Iterable[Recipient | str],
    *,
    allow_mixed: bool = False,
    armor: bool = False,
) -> bytes:
    """Seal a small byte string (a manifest, a test payload) in memory."""
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, recipients, allow_mixed=allow_mixed, armor=armor)
    return out.getvalue()
