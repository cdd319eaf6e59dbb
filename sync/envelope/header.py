"""The age v1 header: parsing, serialising, the header MAC, and size limits.

::

    age-encryption.org/v1
    -> X25519 <share>
    <body, base64 wrapped at 64 columns, ending with a short (maybe empty) line>
    --- <base64 HMAC-SHA256 of everything up to and including "---">

Parsing is strict (no CRLF, canonical base64, exact wrapping) so that there is
exactly one byte string for each header: the MAC then covers the bytes as
read, and every age implementation agrees on what the header says.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import sha256
from typing import BinaryIO

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import b64
from .errors import HeaderError, HmacError
from .stanza import Stanza

INTRO = b"age-encryption.org/v1\n"
ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
FOOTER = b"---"
STANZA_PREFIX = b"-> "
COLUMNS = 64
MAC_SIZE = 32

#: A hostile header must not make the reader buffer or unwrap without bound.
#: A hybrid post-quantum stanza is about 1.6 KB, so this leaves room for far
#: more recipients than the project will ever use.
MAX_HEADER_SIZE = 1 << 20
MAX_STANZAS = 256

_READ_SIZE = 8192


@dataclass(frozen=True)
class Header:
    stanzas: tuple[Stanza, ...]
    mac: bytes
    #: The header bytes the MAC covers: from the intro through ``---``.
    mac_input: bytes
    #: Length in bytes of the whole header, MAC line included.
    size: int


# One regex call instead of a Python loop: a hybrid stanza's argument is 1,500
# characters, checked on every file written and read.
_ARG = re.compile(rb"[\x21-\x7e]+")


def _is_valid_arg(arg: bytes) -> bool:
    return _ARG.fullmatch(arg) is not None


def header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    mac_key = HKDF(SHA256(), 32, None, b"header").derive(file_key)
    return hmac.new(mac_key, mac_input, sha256).digest()


def verify_mac(header: Header, file_key: bytes) -> None:
    if not hmac.compare_digest(header_mac(file_key, header.mac_input), header.mac):
        raise HmacError("header MAC does not verify: the header was altered or the key is wrong")


def encode_stanza(stanza: Stanza) -> bytes:
    words = [stanza.type, *stanza.args]
    encoded = [w.encode("ascii") for w in words]
    if not all(_is_valid_arg(w) for w in encoded):
        raise ValueError("stanza type and arguments must be non-empty printable ASCII")
    body = b64.encode(stanza.body).encode("ascii")
    lines = [body[i : i + COLUMNS] for i in range(0, len(body), COLUMNS)]
    # The body always ends with a line shorter than 64 columns, empty if need be.
    if not lines or len(lines[-1]) == COLUMNS:
        lines.append(b"")
    return STANZA_PREFIX + b" ".join(encoded) + b"\n" + b"".join(line + b"\n" for line in lines)


def build_header(stanzas: Iterable[Stanza], file_key: bytes) -> bytes:
    stanzas = list(stanzas)
    if len(stanzas) > MAX_STANZAS:
        raise ValueError(f"at most {MAX_STANZAS} stanzas")
    mac_input = INTRO + b"".join(encode_stanza(s) for s in stanzas) + FOOTER
    if len(mac_input) + 46 > MAX_HEADER_SIZE:
        raise ValueError("header too large")
    mac = header_mac(file_key, mac_input)
    return mac_input + b" " + b64.encode(mac).encode("ascii") + b"\n"


class _Lines:
    """Newline-terminated lines from a binary stream, never more than the limit."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self.buf = bytearray()
        self.pos = 0  # start of the next line
        self._scan = 0  # no newline before this offset
        self._eof = False

    def readline(self) -> bytes:
        while True:
            end = self.buf.find(b"\n", max(self.pos, self._scan))
            if end >= 0 and end < MAX_HEADER_SIZE:
                line = bytes(self.buf[self.pos : end + 1])
                self.pos = end + 1
                return line
            if len(self.buf) >= MAX_HEADER_SIZE:
                raise HeaderError(f"header is larger than {MAX_HEADER_SIZE} bytes")
            if self._eof:
                raise HeaderError("file ends inside the header")
            self._scan = len(self.buf)
            block = self._src.read(_READ_SIZE)
            if not block:
                self._eof = True
            else:
                self.buf += block

    def peek(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n and not self._eof:
            block = self._src.read(_READ_SIZE)
            if not block:
                self._eof = True
            else:
                self.buf += block
        return bytes(self.buf[self.pos : self.pos + n])


def _read_stanza(lines: _Lines) -> Stanza:
    line = lines.readline()
    if not line.startswith(STANZA_PREFIX):
        raise HeaderError("malformed stanza opening line")
    parts = line[:-1].split(b" ")
    args = parts[1:]
    if parts[0] != b"->" or not args or not all(_is_valid_arg(a) for a in args):
        raise HeaderError("malformed stanza opening line")
    body = bytearray()
    while True:
        text = lines.readline()[:-1]
        if len(text) > COLUMNS:
            raise HeaderError("stanza body line is longer than 64 columns")
        try:
            body += b64.decode(text)
        except b64.Base64Error as exc:
            if text.startswith((b"->", FOOTER)):
                raise HeaderError("stanza ended without a short body line") from None
            raise HeaderError(f"malformed stanza body: {exc}") from None
        if len(text) < COLUMNS:
            break
    words = [a.decode("ascii") for a in args]
    return Stanza(words[0], tuple(words[1:]), bytes(body))


def read_header(src: BinaryIO) -> tuple[Header, bytes]:
    """Parse the header at the stream's position.

    Returns the header and the bytes already read past it (the start of the
    payload), since a pipe cannot be rewound.
    """
    lines = _Lines(src)
    try:
        intro = lines.readline()
    except HeaderError:
        intro = b""
    if intro != INTRO:
        if bytes(lines.buf[:1024]).lstrip().startswith(ARMOR_BEGIN):
            raise HeaderError("ASCII-armored age file given to the binary header parser")
        if not lines.buf:
            raise HeaderError("empty file: not an age file")
        raise HeaderError("not an age v1 file (unsupported version or format)")
    stanzas: list[Stanza] = []
    while True:
        if lines.peek(len(FOOTER)) == FOOTER:
            footer_start = lines.pos
            parts = lines.readline()[:-1].split(b" ")
            if parts[0] != FOOTER or len(parts) != 2:
                raise HeaderError("malformed header MAC line")
            try:
                mac = b64.decode(parts[1])
            except b64.Base64Error as exc:
                raise HeaderError(f"malformed header MAC: {exc}") from None
            if len(mac) != MAC_SIZE:
                raise HeaderError("malformed header MAC: wrong length")
            break
        if len(stanzas) >= MAX_STANZAS:
            raise HeaderError(f"header has more than {MAX_STANZAS} stanzas")
        stanzas.append(_read_stanza(lines))
    header = Header(
        stanzas=tuple(stanzas),
        mac=mac,
        mac_input=bytes(lines.buf[: footer_start + len(FOOTER)]),
        size=lines.pos,
    )
    return header, bytes(lines.buf[lines.pos :])
