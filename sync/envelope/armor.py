"""age's ASCII armor: strict PEM with the label ``AGE ENCRYPTED FILE``.

::

    -----BEGIN AGE ENCRYPTED FILE-----
    <padded standard base64 of the age file, 64 columns per line>
    -----END AGE ENCRYPTED FILE-----

The armor is malleable unless it is parsed strictly (age spec, "ASCII armor"),
so the decoder accepts exactly what age writes and the C2SP vectors require:
whitespace before the BEGIN line and after the END line (at most 1 KiB each,
as age), LF or CRLF line endings, every data line exactly 64 columns except
the last (1 to 64 columns, padded, canonical), no PEM headers, no empty line,
nothing else. Any breach is an :class:`ArmorError`.

The decoder streams: it holds at most one read block of armored text, and it
checks what follows the END line before it reports the end of the data, so
the age reader never authenticates a final chunk of a file whose armor is bad.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import BinaryIO

from .errors import ArmorError
from .streamio import Readinto, write_all

__all__ = [
    "BEGIN",
    "END",
    "ArmorDecoder",
    "ArmorEncoder",
    "armor_bytes",
    "dearmor_bytes",
    "looks_armored",
]

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
END = b"-----END AGE ENCRYPTED FILE-----"
COLUMNS = 64
BYTES_PER_LINE = 48
#: Whitespace tolerated before BEGIN and after END, as age (Go) does.
MAX_WHITESPACE = 1024
BINARY_INTRO = b"age-encryption.org/"
#: How much of a file :func:`looks_armored` may need to see.
SNIFF_SIZE = MAX_WHITESPACE + len(BEGIN) + 2

_READ_SIZE = 64 * 1024
# A run of complete full-width lines: the bulk of any armored file, decoded in one go.
_FULL_LINES = re.compile(rb"(?:[A-Za-z0-9+/]{64}\r?\n)+")
_LAST_LINE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
# Longest line worth buffering while looking for its end (64 columns and CRLF).
_MAX_LINE = COLUMNS + 2


def looks_armored(prefix: bytes) -> bool:
    """Whether a file starting with ``prefix`` is meant as armor (not binary age).

    The binary format starts with ``age-encryption.org/``. Armor starts with
    ``-----`` after optional whitespace; a file that has a BEGIN line somewhere
    near its start (garbage before it) is armor too, and fails as bad armor
    rather than as "not an age file".
    """
    if prefix.startswith(BINARY_INTRO):
        return False
    return prefix.lstrip().startswith(b"-----") or b"-----BEGIN" in prefix[:SNIFF_SIZE]


def _decode_line(line: bytes) -> bytes:
    """One padded base64 line, decoded strictly (canonical, no stray characters)."""
    if not line:
        raise ArmorError("invalid armor: empty line")
    if len(line) > COLUMNS:
        raise ArmorError("invalid armor: line longer than 64 columns")
    if len(line) % 4 or _LAST_LINE.fullmatch(line) is None:
        raise ArmorError("invalid armor: not padded standard base64")
    try:
        data = base64.b64decode(line, validate=True)
    except binascii.Error:
        raise ArmorError("invalid armor: not padded standard base64") from None
    if base64.b64encode(data) != line:
        raise ArmorError("invalid armor: non-canonical base64")
    return data


class ArmorDecoder:
    """The age file inside an armored stream, read as a binary stream.

    ``prefix`` is what the caller already read from the source (to sniff it).
    """

    def __init__(self, readinto: Readinto, prefix: bytes = b"") -> None:
        self._readinto = readinto
        self._buf = bytearray(prefix)
        self._pos = 0
        self._eof = False
        self._state = "begin"  # begin -> body -> last -> done
        self._out = b""
        self._out_pos = 0

    # -- the armored text, line by line --------------------------------------

    def _more(self) -> None:
        if self._pos > _READ_SIZE:
            del self._buf[: self._pos]
            self._pos = 0
        block = bytearray(_READ_SIZE)
        n = self._readinto(memoryview(block))
        if not n:
            self._eof = True
        else:
            self._buf += block[:n]

    def _line(self, limit: int) -> bytes | None:
        """The next line without its LF or CRLF; None at the end of the input."""
        while True:
            end = self._buf.find(b"\n", self._pos, self._pos + limit + 1)
            if end >= 0:
                line = bytes(self._buf[self._pos : end])
                self._pos = end + 1
                return line[:-1] if line.endswith(b"\r") else line
            if len(self._buf) - self._pos > limit:
                raise ArmorError("invalid armor: line too long")
            if self._eof:
                if self._pos == len(self._buf):
                    return None
                line = bytes(self._buf[self._pos :])
                self._pos = len(self._buf)
                return line[:-1] if line.endswith(b"\r") else line
            self._more()

    def _begin(self) -> None:
        skipped = 0
        while True:
            line = self._line(MAX_WHITESPACE + len(BEGIN) + 2)
            if line is None:
                raise ArmorError("invalid armor: no BEGIN line")
            if line.strip() == b"":
                skipped += len(line) + 1
                if skipped > MAX_WHITESPACE:
                    raise ArmorError("invalid armor: too much leading whitespace")
                continue
            if line != BEGIN:
                raise ArmorError("invalid armor: the first line is not " + BEGIN.decode())
            self._state = "body"
            return

    def _finish(self) -> None:
        """After the END line: only whitespace, and not much of it."""
        while not self._eof and len(self._buf) - self._pos <= MAX_WHITESPACE:
            self._more()
        rest = bytes(self._buf[self._pos :])
        if rest.strip():
            raise ArmorError("invalid armor: data after the END line")
        if len(rest) >= MAX_WHITESPACE:
            raise ArmorError("invalid armor: too much trailing whitespace")
        self._buf = bytearray()
        self._pos = 0
        self._state = "done"

    def _advance(self) -> bytes:
        """Decode the next piece; b"" only once the armor is complete and valid."""
        while True:
            if self._state == "begin":
                self._begin()
            if self._state == "done":
                return b""
            if self._state == "body":
                run = _FULL_LINES.match(self._buf, self._pos)
                if run is not None:
                    self._pos = run.end()
                    return base64.b64decode(run.group().translate(None, b"\r\n"))
                # Not a complete full line: read more unless a whole line is here.
                if self._buf.find(b"\n", self._pos) < 0 and not self._eof:
                    if len(self._buf) - self._pos > _MAX_LINE:
                        raise ArmorError("invalid armor: line longer than 64 columns")
                    self._more()
                    continue
                line = self._line(_MAX_LINE)
                if line is None:
                    raise ArmorError("invalid armor: the file ends before the END line")
                if line == END:
                    self._finish()
                    return b""
                data = _decode_line(line)
                # A full, unpadded line here is the last one before EOF without END.
                self._state = "last"
                return data
            # "last": a line shorter than 48 bytes was the final one.
            line = self._line(_MAX_LINE)
            if line is None:
                raise ArmorError("invalid armor: the file ends before the END line")
            if line != END:
                raise ArmorError("invalid armor: a short line that is not the last one")
            self._finish()
            return b""

    # -- binary stream interface --------------------------------------------

    def readinto(self, buf: memoryview | bytearray) -> int:
        out = memoryview(buf).cast("B")
        while self._out_pos == len(self._out):
            if self._state == "done":
                return 0
            self._out = self._advance()
            self._out_pos = 0
        n = min(len(out), len(self._out) - self._out_pos)
        out[:n] = self._out[self._out_pos : self._out_pos + n]
        self._out_pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            chunks = []
            while block := self.read(_READ_SIZE):
                chunks.append(block)
            return b"".join(chunks)
        buf = bytearray(size)
        n = self.readinto(buf)
        return bytes(buf[:n])


class ArmorEncoder:
    """Writes armor around what is written to it; :meth:`close` adds the END line.

    The output is what age and typage write: 48 bytes per 64-column line, the
    last line as long as it needs to be (a full one if the size is a multiple
    of 48), each line ending in LF.
    """

    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst
        self._pending = bytearray()
        self._closed = False
        #: Armored bytes written so far.
        self.written = 0
        self._emit(BEGIN + b"\n")

    def _emit(self, data: bytes) -> None:
        write_all(self._dst, memoryview(data))
        self.written += len(data)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._closed:
            raise ValueError("the armor is closed")
        self._pending += data
        whole = len(self._pending) // BYTES_PER_LINE * BYTES_PER_LINE
        if whole:
            text = base64.b64encode(self._pending[:whole])
            del self._pending[:whole]
            self._emit(
                b"".join(text[i : i + COLUMNS] + b"\n" for i in range(0, len(text), COLUMNS))
            )
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pending:
            self._emit(base64.b64encode(self._pending) + b"\n")
            self._pending.clear()
        self._emit(END + b"\n")


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)

    def readinto(self, buf: memoryview) -> int:
        n = min(len(buf), len(self._view))
        buf[:n] = self._view[:n]
        self._view = self._view[n:]
        return n


def armor_bytes(data: bytes) -> bytes:
    """The armored form of an age file held in memory."""
    import io

    out = io.BytesIO()
    encoder = ArmorEncoder(out)
    encoder.write(data)
    encoder.close()
    return out.getvalue()


def dearmor_bytes(data: bytes) -> bytes:
    """The age file inside armored text (strict; raises :class:`ArmorError`)."""
    return ArmorDecoder(_Bytes(data).readinto).read()
