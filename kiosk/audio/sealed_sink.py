"""The file object libsndfile writes the Ogg/Opus stream into: the envelope writer.

libsndfile writes Ogg only forward. When it opens the file it asks for the length
(tell, seek to the end, tell, seek back), all at offset 0 of an empty stream; after
that it only appends. So this sink supports ``tell()`` and no-op seeks, and refuses
any seek that would move: plaintext never has to be re-read or patched, so none of it
has to stay anywhere but in the encoder and the writer's one chunk.

libsndfile calls ``write`` from C through a cffi callback, where an exception is
printed and swallowed and the Ogg page silently lost. So ``write`` never raises: a
failed disk write (ENOSPC), or any other failure of the writer, is recorded in
:attr:`error`, the bytes the envelope writer did not keep are held here in RAM, and
the recorder, which checks :attr:`error` after every block, frees space and calls
:meth:`flush_held` before sealing.
"""

from __future__ import annotations

import io
import os
from typing import Protocol


class PlaintextWriter(Protocol):
    """The part of :class:`sync.envelope.EnvelopeWriter` the sink needs."""

    @property
    def bytes_accepted(self) -> int: ...

    def write(self, data: bytes | bytearray | memoryview) -> None: ...


class SealedSink(io.RawIOBase):
    def __init__(self, writer: PlaintextWriter) -> None:
        super().__init__()
        self._writer: PlaintextWriter | None = writer
        self._pos = 0
        self._held = bytearray()
        #: The first error the envelope writer raised (OSError for a full disk), if any.
        self.error: Exception | None = None

    @property
    def bytes_written(self) -> int:
        """Bytes of Ogg/Opus the encoder has produced so far."""
        return self._pos

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        # True, so that libsndfile's length probe works; see seek().
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = {os.SEEK_SET: offset, os.SEEK_CUR: self._pos + offset,
                  os.SEEK_END: self._pos + offset}.get(whence)
        if target != self._pos:
            raise io.UnsupportedOperation("the sealed stream only appends")
        return self._pos

    def read(self, size: int = -1) -> bytes:
        raise io.UnsupportedOperation("the sealed stream cannot be read back")

    def readinto(self, buffer: object) -> int:
        raise io.UnsupportedOperation("the sealed stream cannot be read back")

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        n = len(data)
        self._pos += n
        if self.error is not None or self._writer is None:
            self._held += data
            return n
        before = self._writer.bytes_accepted
        try:
            self._writer.write(data)
        except Exception as exc:
            # Not only OSError: anything raised here would be printed and swallowed by
            # cffi, and the page lost without a word.
            self.error = exc
            kept = self._writer.bytes_accepted - before
            self._held += memoryview(data)[kept:]
        return n

    def flush_held(self) -> None:
        """Give the envelope writer what it could not take; raises OSError if it still can't."""
        if self._held and self._writer is not None:
            before = self._writer.bytes_accepted
            try:
                self._writer.write(self._held)
            except OSError:
                del self._held[:self._writer.bytes_accepted - before]
                raise
            self._wipe_held()

    @property
    def held(self) -> int:
        return len(self._held)

    def _wipe_held(self) -> None:
        self._held[:] = bytes(len(self._held))
        self._held.clear()

    def detach_writer(self) -> None:
        """Forget the envelope writer (and with it the file key) once the take is over."""
        self._writer = None
        self._wipe_held()

    def close(self) -> None:
        # libsndfile's close does not close the Python object; the recorder does, and
        # closing must never touch the writer: sealing is the recorder's decision.
        super().close()
