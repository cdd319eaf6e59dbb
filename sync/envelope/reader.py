"""Reading age files: streaming decryption and a seekable plaintext view.

Rules that hold for every path through this module:

* no plaintext of a chunk leaves before that chunk authenticates;
* a payload that ends without a final chunk raises :class:`TruncatedError`,
  unless the caller asked for recovery, in which case reading stops at the
  authenticated prefix and the result says it is truncated;
* in recovery mode only the piece at the very end of the file may fail to
  authenticate (a torn last write); damage anywhere else is still an error;
* ASCII armor is detected and removed on the fly (strictly, see ``armor``);
  an armor error is an :class:`ArmorError` and, like a chunk that fails,
  stops reading before the plaintext of the chunk it falls in is released.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from .armor import BINARY_INTRO, SNIFF_SIZE, ArmorDecoder, looks_armored
from .errors import (
    HeaderError,
    NoIdentityMatchError,
    PayloadError,
    TruncatedError,
    WrongPassphrase,
)
from .header import Header, read_header, verify_mac
from .scrypt import STANZA_TYPE as SCRYPT_TYPE
from .scrypt import ScryptIdentity
from .stanza import Identity
from .stream import (
    CHUNK_SIZE,
    ENC_CHUNK_SIZE,
    FILE_KEY_SIZE,
    PAYLOAD_NONCE_SIZE,
    TAG_SIZE,
    ChunkOpener,
    payload_key,
)
from .streamio import Readinto, fill, write_all

__all__ = ["DecryptResult", "SealedReader", "decrypt_stream", "open_bytes", "open_sealed"]


@dataclass(frozen=True)
class DecryptResult:
    #: Plaintext bytes written to the destination.
    size: int
    #: The payload had no final chunk (only possible with ``recover=True``).
    truncated: bool = False
    #: Ciphertext bytes at the end of the file dropped by recovery.
    discarded: int = 0


def _identity_list(identities: Identity | Iterable[Identity] | None) -> list[Identity]:
    if identities is None:
        return []
    if hasattr(identities, "unwrap"):
        return [identities]  # type: ignore[list-item]
    return list(identities)  # type: ignore[arg-type]


def _check_stanza_types(header: Header) -> None:
    # The age spec: a reader MUST reject a header where an scrypt stanza sits
    # alongside any other. Checked here for every header and every identity,
    # not only by the scrypt identity: a passphrase file must not also open
    # with a key someone added.
    if len(header.stanzas) > 1 and any(s.type == SCRYPT_TYPE for s in header.stanzas):
        raise HeaderError("an scrypt stanza must be the only one in the header")


def _no_match(header: Header, ids: list[Identity]) -> NoIdentityMatchError:
    passphrase_file = any(s.type == SCRYPT_TYPE for s in header.stanzas)
    tried_passphrase = any(isinstance(i, ScryptIdentity) for i in ids)
    if passphrase_file and tried_passphrase:
        return WrongPassphrase("wrong passphrase: it does not open this file")
    if passphrase_file:
        return NoIdentityMatchError(
            "the file is passphrase-encrypted (scrypt): open it with its passphrase"
        )
    if tried_passphrase and all(isinstance(i, ScryptIdentity) for i in ids):
        return NoIdentityMatchError(
            "the file is not passphrase-encrypted: it is sealed to recipients (use an identity)"
        )
    return NoIdentityMatchError("no identity matched any of the file's recipients")


def unlock(
    header: Header,
    *,
    identities: Identity | Iterable[Identity] | None = None,
    file_key: bytes | None = None,
) -> bytes:
    """Find the file key (from an identity, or check the one given) and verify the MAC."""
    _check_stanza_types(header)
    if file_key is not None:
        if len(file_key) != FILE_KEY_SIZE:
            raise ValueError("file key must be 16 bytes")
        verify_mac(header, file_key)
        return bytes(file_key)
    ids = _identity_list(identities)
    if not ids:
        raise ValueError("give identities or file_key")
    for identity in ids:
        # A HeaderError from an identity (malformed stanza of its type) is
        # final, as in age: it is not turned into "no match".
        key = identity.unwrap(header.stanzas)
        if key is not None:
            break
    else:
        raise _no_match(header, ids)
    if len(key) != FILE_KEY_SIZE:
        raise HeaderError("unwrapped file key is not 16 bytes")
    verify_mac(header, key)
    return key


class _Prefixed:
    """A stream with some bytes already read from it put back in front."""

    def __init__(self, src: BinaryIO, prefix: bytes) -> None:
        self._src = src
        self._prefix = memoryview(prefix)
        self._readinto = getattr(src, "readinto", None)

    def readinto(self, buf: memoryview) -> int:
        if self._prefix:
            n = min(len(buf), len(self._prefix))
            buf[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        if self._readinto is not None:
            n = self._readinto(buf)
        else:
            data = self._src.read(len(buf))
            n = len(data)
            buf[:n] = data
        if n is None:
            raise OSError("non-blocking source returned no data")
        return n


def _readinto_of(src: BinaryIO) -> Readinto:
    readinto = getattr(src, "readinto", None)
    if readinto is not None:

        def checked(buf: memoryview) -> int:
            n = readinto(buf)
            if n is None:
                raise OSError("non-blocking source returned no data")
            return n

        return checked

    def via_read(buf: memoryview) -> int:
        data = src.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    return via_read


def _sniff(readinto: Readinto) -> tuple[bytes, bool]:
    """Read the start of a file; return it and whether the file is armored."""
    prefix = bytearray()
    want = len(BINARY_INTRO)
    while len(prefix) < SNIFF_SIZE:
        block = bytearray(want - len(prefix))
        n = readinto(memoryview(block))
        if not n:
            break
        prefix += block[:n]
        if len(prefix) >= want:
            if prefix.startswith(BINARY_INTRO) or want == SNIFF_SIZE:
                break
            want = SNIFF_SIZE  # not binary age: look further for armor
    return bytes(prefix), looks_armored(bytes(prefix))


class _Source:
    """The binary age file behind ``src``: as it is, or with its armor removed."""

    def __init__(self, src: BinaryIO) -> None:
        raw = _readinto_of(src)
        prefix, self.armored = _sniff(raw)
        if self.armored:
            self.readinto: Readinto = ArmorDecoder(raw, prefix).readinto
        else:
            self.readinto = _Prefixed(src, prefix).readinto

    def read(self, size: int) -> bytes:
        buf = bytearray(size)
        n = fill(self.readinto, memoryview(buf)) if size else 0
        return bytes(buf[:n])


def _read_nonce(readinto: Readinto) -> bytes:
    nonce = bytearray(PAYLOAD_NONCE_SIZE)
    if fill(readinto, memoryview(nonce)) != PAYLOAD_NONCE_SIZE:
        # age reports this as a header failure, and so do the test vectors.
        raise HeaderError("file ends before the payload nonce")
    return bytes(nonce)


@dataclass(frozen=True)
class _End:
    truncated: bool
    discarded: int = 0


def _chunks(
    readinto: Readinto, opener: ChunkOpener, *, recover: bool
) -> Generator[memoryview, None, _End]:
    """Yield authenticated plaintext chunks in order (views valid until the next one).

    Reads one byte beyond each full chunk so it knows, before decrypting,
    whether more ciphertext follows.
    """
    buf = bytearray(ENC_CHUNK_SIZE + 1)
    view = memoryview(buf)
    have = 0
    index = 0
    while True:
        have += fill(readinto, view[have:])
        if have == 0:
            # The file ends on a chunk boundary and no final chunk was seen.
            if recover:
                return _End(truncated=True)
            raise TruncatedError("payload ends without a final chunk: the file was cut short")
        chunk = view[: min(have, ENC_CHUNK_SIZE)]
        if have > ENC_CHUNK_SIZE:
            # More data follows, so this must be a full non-final chunk.
            plain = opener.open(index, chunk, last=False)
            if plain is not None:
                yield plain
                buf[0] = buf[ENC_CHUNK_SIZE]
                have = 1
                index += 1
                continue
            plain = opener.open(index, chunk, last=True)
            if plain is not None:
                # An authentic final chunk, then more bytes. The chunk itself
                # is authentic, so age releases it before failing; so do we.
                yield plain
                raise PayloadError("data after the final chunk")
            raise PayloadError(f"payload chunk {index} failed to authenticate")
        # The source is exhausted: this is the last piece of the file.
        if have == ENC_CHUNK_SIZE:
            plain = opener.open(index, chunk, last=True)
            if plain is not None:
                yield plain
                return _End(truncated=False)
            plain = opener.open(index, chunk, last=False)
            if plain is not None:
                yield plain
                if recover:
                    return _End(truncated=True)
                raise TruncatedError("payload ends without a final chunk: the file was cut short")
        elif have > TAG_SIZE or (have == TAG_SIZE and index == 0):
            # Only a payload that is empty altogether has an empty final chunk.
            plain = opener.open(index, chunk, last=True)
            if plain is not None:
                yield plain
                return _End(truncated=False)
        if recover:
            return _End(truncated=True, discarded=have)
        raise PayloadError(f"final payload chunk {index} failed to authenticate or is malformed")


def decrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    *,
    identities: Identity | Iterable[Identity] | None = None,
    file_key: bytes | None = None,
    recover: bool = False,
) -> DecryptResult:
    """Decrypt ``src`` to ``dst`` chunk by chunk, writing only authenticated plaintext.

    On failure ``dst`` may already hold the authenticated chunks before the
    failing one; callers writing to a file should delete it.
    """
    plain_src = _Source(src)
    header, rest = read_header(plain_src)  # type: ignore[arg-type]
    key = unlock(header, identities=identities, file_key=file_key)
    source = _Prefixed(plain_src, rest)  # type: ignore[arg-type]
    opener = ChunkOpener(payload_key(key, _read_nonce(source.readinto)))
    size = 0
    chunks = _chunks(source.readinto, opener, recover=recover)
    try:
        while True:
            try:
                plain = next(chunks)
            except StopIteration as stop:
                end: _End = stop.value
                return DecryptResult(size=size, truncated=end.truncated, discarded=end.discarded)
            write_all(dst, plain)
            size += len(plain)
    finally:
        opener.wipe()


def open_bytes(data: bytes, identities: Identity | Iterable[Identity]) -> bytes:
    """Decrypt a small age file held in memory."""
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(data), out, identities=identities)
    return out.getvalue()


#: Armored files decoded for random access stay in memory up to this size.
_SPOOL_IN_MEMORY = 16 * 1024 * 1024


def _dearmor_to_spool(src: BinaryIO) -> BinaryIO:
    """The binary age file inside an armored source, in a seekable spool.

    What the spool holds is ciphertext: it may go to a temporary file.
    """
    decoder = ArmorDecoder(_readinto_of(src))
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115
    try:
        while block := decoder.read(1 << 20):
            spool.write(block)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool  # type: ignore[return-value]


class SealedReader(io.RawIOBase):
    """Read-only plaintext view of an age file.

    Over a seekable source it supports random access: a read computes the
    chunk index, authenticates that chunk, and only then copies from it. The
    final chunk is authenticated when the file is opened, so the plaintext
    size is known and trustworthy and a truncated file fails at once. Over a
    pipe it reads sequentially.
    """

    def __init__(
        self,
        src: BinaryIO,
        *,
        owns_source: bool,
        identities: Identity | Iterable[Identity] | None = None,
        file_key: bytes | None = None,
        recover: bool = False,
    ) -> None:
        super().__init__()
        self._src = src
        self._given = src
        self._owns = owns_source
        self._spool: BinaryIO | None = None
        self._recover = recover
        self._pos = 0
        self._truncated = False
        self._discarded = 0
        self._opener: ChunkOpener | None = None
        try:
            self._random = bool(getattr(src, "seekable", lambda: False)())
            if self._random:
                start = src.tell()
                _, armored = _sniff(_readinto_of(src))
                src.seek(start)
                if armored:
                    # Random access needs the binary layout: decode (and so
                    # check) the whole armor now, into a spool of ciphertext.
                    self._src = src = self._spool = _dearmor_to_spool(src)
                    start = 0
                header, rest = read_header(src)
            else:
                plain = _Source(src)
                header, rest = read_header(plain)  # type: ignore[arg-type]
            key = unlock(header, identities=identities, file_key=file_key)
            if self._random:
                src.seek(start + header.size)
                nonce = _read_nonce(self._source_readinto)
                self._opener = ChunkOpener(payload_key(key, nonce))
                self._payload_start = start + header.size + PAYLOAD_NONCE_SIZE
                self._cached = -1
                self._sealed = memoryview(bytearray(ENC_CHUNK_SIZE))
                self._layout(src.seek(0, os.SEEK_END) - self._payload_start)
            else:
                source = _Prefixed(plain, rest)  # type: ignore[arg-type]
                self._opener = ChunkOpener(payload_key(key, _read_nonce(source.readinto)))
                self._chunks = _chunks(source.readinto, self._opener, recover=recover)
                self._current = memoryview(b"")
                self._done = False
        except BaseException:
            self._release()
            raise

    # -- layout of a seekable file ------------------------------------------

    def _source_readinto(self, buf: memoryview) -> int:
        readinto = getattr(self._src, "readinto", None)
        if readinto is not None:
            return readinto(buf) or 0
        data = self._src.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def _read_chunk(self, index: int, length: int) -> memoryview:
        data = self._sealed[:length]
        self._src.seek(self._payload_start + index * ENC_CHUNK_SIZE)
        if fill(self._source_readinto, data) != length:
            raise PayloadError("file changed while it was being read")
        return data

    def _try_open(self, index: int, length: int, last: bool) -> memoryview | None:
        assert self._opener is not None
        # The opener reuses one buffer: whatever was cached is gone now.
        self._cached = -1
        plain = self._opener.open(index, self._read_chunk(index, length), last)
        if plain is not None:
            self._cached, self._cached_plain = index, plain
        return plain

    def _layout(self, payload_len: int) -> None:
        """Find the chunk count and plaintext size, authenticating the end."""
        count = -(-payload_len // ENC_CHUNK_SIZE) if payload_len > 0 else 0
        tail = payload_len - (count - 1) * ENC_CHUNK_SIZE if count else 0
        self._final = False
        self._tail = tail
        if count:
            if tail > TAG_SIZE or (tail == TAG_SIZE and count == 1):
                plain = self._try_open(count - 1, tail, last=True)
                if plain is not None:
                    self._final = True
                    self._count = count
                    self._size = (count - 1) * CHUNK_SIZE + len(plain)
                    return
            if tail == ENC_CHUNK_SIZE and self._try_open(count - 1, tail, last=False) is not None:
                self._truncated_at(count)
                return
            if not self._recover:
                raise PayloadError(
                    f"final payload chunk {count - 1} failed to authenticate or is malformed"
                )
            # Recovery: drop the damaged tail; what precedes it must be a
            # sound non-final chunk, or the file is damaged, not just cut.
            self._discarded = tail
            count -= 1
            if count and self._try_open(count - 1, ENC_CHUNK_SIZE, last=False) is None:
                raise PayloadError(f"payload chunk {count - 1} failed to authenticate")
        self._truncated_at(count)

    def _truncated_at(self, count: int) -> None:
        if not self._recover:
            raise TruncatedError("payload ends without a final chunk: the file was cut short")
        self._truncated = True
        self._count = count
        self._size = count * CHUNK_SIZE
        self._tail = ENC_CHUNK_SIZE

    def _chunk(self, index: int) -> memoryview:
        if index == self._cached:
            return self._cached_plain
        final_index = index == self._count - 1
        length = self._tail if final_index else ENC_CHUNK_SIZE
        plain = self._try_open(index, length, last=self._final and final_index)
        if plain is None:
            raise PayloadError(f"payload chunk {index} failed to authenticate")
        return plain

    # -- io.RawIOBase ---------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._random

    @property
    def truncated(self) -> bool:
        """True once the reader knows the file had no final chunk (recovery mode)."""
        return self._truncated

    @property
    def discarded(self) -> int:
        """Ciphertext bytes at the end of the file that recovery dropped."""
        return self._discarded

    @property
    def size(self) -> int:
        """Plaintext size (seekable sources only)."""
        if not self._random:
            raise io.UnsupportedOperation("size is unknown for a non-seekable source")
        return self._size

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
        if self.closed:
            raise ValueError("I/O operation on closed file")
        out = memoryview(buffer).cast("B")
        done = 0
        if self._random:
            while done < len(out) and self._pos < self._size:
                index, offset = divmod(self._pos, CHUNK_SIZE)
                plain = self._chunk(index)
                n = min(len(out) - done, len(plain) - offset)
                out[done : done + n] = plain[offset : offset + n]
                done += n
                self._pos += n
            return done
        while done < len(out):
            if not self._current:
                if self._done:
                    break
                try:
                    self._current = next(self._chunks)
                except StopIteration as stop:
                    end: _End = stop.value
                    self._truncated = end.truncated
                    self._discarded = end.discarded
                    self._done = True
                    break
            n = min(len(out) - done, len(self._current))
            out[done : done + n] = self._current[:n]
            self._current = self._current[n:]
            done += n
            self._pos += n
        return done

    def readall(self) -> bytes:
        if self._random and not self.closed:
            out = bytearray(max(self._size - self._pos, 0))
            n = self.readinto(out)
            del out[n:]
            return bytes(out)
        return super().readall()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if not self._random:
            raise io.UnsupportedOperation("source is not seekable")
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def tell(self) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        return self._pos

    def _release(self) -> None:
        if self._opener is not None:
            self._opener.wipe()
            self._opener = None
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if self._owns:
            self._given.close()

    def close(self) -> None:
        if not self.closed:
            self._release()
        super().close()


def open_sealed(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    identities: Identity | Iterable[Identity] | None = None,
    file_key: bytes | None = None,
    recover: bool = False,
) -> SealedReader:
    """Open an age file for reading its plaintext (seekable when the source is).

    Give ``identities`` to find the file key from the header, or ``file_key``
    (from :attr:`EnvelopeWriter.file_key`) to review a file just written.
    """
    if isinstance(source, (str, os.PathLike)):
        fh = open(source, "rb", buffering=0)  # noqa: SIM115 - the reader owns it
        return SealedReader(
            fh, owns_source=True, identities=identities, file_key=file_key, recover=recover
        )
    return SealedReader(
        source, owns_source=False, identities=identities, file_key=file_key, recover=recover
    )
