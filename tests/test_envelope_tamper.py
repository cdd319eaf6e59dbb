"""Tampering is detected with the right exception, and no unauthenticated plaintext leaks.

Both readers are checked: the streaming one may release the chunks before
the damaged one (they authenticated), never any byte of it or after it; the
seekable one never more than that.
"""

from __future__ import annotations

import io
import random

import pytest

from sync.envelope import (
    CHUNK_SIZE,
    EnvelopeError,
    HeaderError,
    HmacError,
    NoIdentityMatchError,
    PayloadError,
    Stanza,
    TruncatedError,
    X25519Identity,
    decrypt_stream,
    open_sealed,
    seal_bytes,
)
from sync.envelope.header import encode_stanza, read_header
from sync.envelope.stream import ENC_CHUNK_SIZE, PAYLOAD_NONCE_SIZE, ChunkSealer, payload_key

ME = X25519Identity.generate()
OTHERS = [X25519Identity.generate(), X25519Identity.generate()]
# Three full chunks and a short final one; recipients: another, me, another.
PLAIN = random.Random(7).randbytes(3 * CHUNK_SIZE + 1000)
SEALED = seal_bytes(PLAIN, [OTHERS[0].recipient(), ME.recipient(), OTHERS[1].recipient()])
HEADER, _ = read_header(io.BytesIO(SEALED))
PAYLOAD_START = HEADER.size + PAYLOAD_NONCE_SIZE
CHUNKS = 4


def _stream(data: bytes, **kwargs) -> tuple[EnvelopeError | None, bytes]:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    kwargs.setdefault("identities", [ME])
    try:
        decrypt_stream(io.BytesIO(data), out, **kwargs)
    except EnvelopeError as exc:
        return exc, out.getvalue()
    return None, out.getvalue()


def _seekable(data: bytes, **kwargs) -> tuple[EnvelopeError | None, bytes]:  # type: ignore[no-untyped-def]
    kwargs.setdefault("identities", [ME])
    got = bytearray()
    try:
        with open_sealed(io.BytesIO(data), **kwargs) as reader:
            while block := reader.read(10_000):
                got += block
    except EnvelopeError as exc:
        return exc, bytes(got)
    return None, bytes(got)


def _flip(data: bytes, pos: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[pos] ^= mask
    return bytes(out)


def _stanza_spans() -> list[tuple[int, int, int]]:
    """(start, end, recipient number) of each stanza in the header bytes."""
    spans = []
    pos = len(b"age-encryption.org/v1\n")
    for number, stanza in enumerate(HEADER.stanzas):
        length = len(encode_stanza(stanza))
        spans.append((pos, pos + length, number))
        pos += length
    return spans


def _expected_header_errors(pos: int) -> tuple[type[EnvelopeError], ...]:
    for start, end, number in _stanza_spans():
        if start <= pos < end:
            if number == 1:  # my own stanza: unwrapping fails or it is malformed
                return (HeaderError, NoIdentityMatchError)
            return (HeaderError, HmacError)  # I still unwrap; the MAC catches it
    if pos < len(b"age-encryption.org/v1\n"):
        return (HeaderError,)
    return (HeaderError, HmacError)  # the MAC line


def _positions_in_chunk(index: int, rng: random.Random) -> list[int]:
    start = PAYLOAD_START + index * ENC_CHUNK_SIZE
    end = min(start + ENC_CHUNK_SIZE, len(SEALED))
    picks = {start, start + 1, end - 17, end - 16, end - 1, (start + end) // 2}
    picks.update(rng.randrange(start, end) for _ in range(6))
    return sorted(picks)


def test_sealed_layout_is_as_assumed() -> None:
    assert len(SEALED) == PAYLOAD_START + 3 * ENC_CHUNK_SIZE + 1000 + 16
    assert _stream(SEALED) == (None, PLAIN)


def test_every_header_byte_flip_is_a_header_level_failure() -> None:
    for pos in range(HEADER.size):
        for mask in (0x01, 0x80):
            error, released = _stream(_flip(SEALED, pos, mask))
            expected = _expected_header_errors(pos)
            assert isinstance(error, expected), f"byte {pos} ^ {mask:#x}: {error!r}"
            assert released == b"", f"byte {pos}: plaintext released"
            error, released = _seekable(_flip(SEALED, pos, mask))
            assert isinstance(error, expected) and released == b""


def test_payload_nonce_flip_fails_the_first_chunk() -> None:
    for pos in range(HEADER.size, PAYLOAD_START):
        error, released = _stream(_flip(SEALED, pos))
        assert type(error) is PayloadError and released == b"", pos
        error, released = _seekable(_flip(SEALED, pos))
        assert type(error) is PayloadError and released == b"", pos


@pytest.mark.parametrize("index", range(CHUNKS))
def test_chunk_byte_flips_release_only_earlier_chunks(index: int) -> None:
    rng = random.Random(index)
    for pos in _positions_in_chunk(index, rng):
        tampered = _flip(SEALED, pos, 1 << rng.randrange(8))
        error, released = _stream(tampered)
        # A damaged chunk is a payload failure, never mistaken for truncation.
        assert type(error) is PayloadError, f"chunk {index} byte {pos}: {error!r}"
        assert released == PLAIN[: index * CHUNK_SIZE], f"chunk {index} byte {pos}"
        error, released = _seekable(tampered)
        assert type(error) is PayloadError, f"chunk {index} byte {pos}: {error!r}"
        assert PLAIN.startswith(released) and len(released) <= index * CHUNK_SIZE
        # Recovery does not excuse damage inside the file (only a torn tail).
        if index < CHUNKS - 1:
            error, _ = _stream(tampered, recover=True)
            assert type(error) is PayloadError


def test_dropping_the_last_chunk_is_truncation() -> None:
    cut = SEALED[: PAYLOAD_START + 3 * ENC_CHUNK_SIZE]
    error, released = _stream(cut)
    assert type(error) is TruncatedError
    assert released == PLAIN[: 3 * CHUNK_SIZE]  # all of it authenticated
    error, released = _seekable(cut)
    assert type(error) is TruncatedError and released == b""
    out = io.BytesIO()
    result = decrypt_stream(io.BytesIO(cut), out, identities=[ME], recover=True)
    assert result.truncated and out.getvalue() == PLAIN[: 3 * CHUNK_SIZE]
    with open_sealed(io.BytesIO(cut), identities=[ME], recover=True) as reader:
        assert reader.truncated and reader.size == 3 * CHUNK_SIZE
        assert reader.read() == PLAIN[: 3 * CHUNK_SIZE]


@pytest.mark.parametrize("keep", [0, 1, 17, 1000, ENC_CHUNK_SIZE - 1])
def test_cutting_inside_a_chunk(keep: int) -> None:
    """A cut inside a chunk: a payload failure; recovery keeps the chunks before it."""
    cut = SEALED[: PAYLOAD_START + 2 * ENC_CHUNK_SIZE + keep]
    error, released = _stream(cut)
    assert isinstance(error, PayloadError)
    assert released == PLAIN[: 2 * CHUNK_SIZE]
    for read in (_stream, _seekable):
        error, released = read(cut, recover=True)
        assert error is None and released == PLAIN[: 2 * CHUNK_SIZE], read.__name__


def test_appending_a_copied_chunk() -> None:
    chunk = SEALED[PAYLOAD_START : PAYLOAD_START + ENC_CHUNK_SIZE]
    for read in (_stream, _seekable):
        error, released = read(SEALED + chunk)
        assert type(error) is PayloadError, read.__name__
        assert PLAIN[: 3 * CHUNK_SIZE].startswith(released)


def test_appending_a_chunk_sealed_with_the_right_key() -> None:
    """Even an insider with the payload key cannot extend a finished file."""
    plain = random.Random(3).randbytes(2 * CHUNK_SIZE)  # the final chunk is full
    identity = X25519Identity.generate()
    sealed = seal_bytes(plain, [identity.recipient()])
    header, _ = read_header(io.BytesIO(sealed))
    nonce = sealed[header.size : header.size + PAYLOAD_NONCE_SIZE]
    file_key = identity.unwrap(header.stanzas)
    assert file_key is not None
    sealer = ChunkSealer(payload_key(file_key, nonce))
    extra = bytes(sealer.seal(2, b"more", last=True))
    error, released = _stream(sealed + extra, identities=[identity])
    assert type(error) is PayloadError
    assert released == plain  # the chunks, the final one included, authenticated
    error, released = _seekable(sealed + extra, identities=[identity])
    # It takes the forged chunk for the final one, then chunk 1 fails as a
    # non-final chunk.
    assert type(error) is PayloadError and plain[:CHUNK_SIZE].startswith(released)


def test_swapping_two_chunks() -> None:
    chunks = [
        SEALED[PAYLOAD_START + i * ENC_CHUNK_SIZE : PAYLOAD_START + (i + 1) * ENC_CHUNK_SIZE]
        for i in range(CHUNKS)
    ]
    for a, b in [(0, 1), (1, 2), (0, 2)]:
        swapped = list(chunks)
        swapped[a], swapped[b] = swapped[b], swapped[a]
        tampered = SEALED[:PAYLOAD_START] + b"".join(swapped)
        error, released = _stream(tampered)
        assert type(error) is PayloadError and released == PLAIN[: a * CHUNK_SIZE], (a, b)
        error, released = _seekable(tampered)
        assert type(error) is PayloadError and len(released) <= a * CHUNK_SIZE


def _rebuild(stanzas: list[Stanza]) -> bytes:
    """The file with its stanzas replaced, the old MAC kept (an attacker has no key)."""
    text = b"age-encryption.org/v1\n" + b"".join(encode_stanza(s) for s in stanzas)
    mac_line = SEALED[len(HEADER.mac_input) : HEADER.size]
    return text + b"---" + mac_line + SEALED[HEADER.size :]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("drop another recipient", HmacError),
        ("reorder stanzas", HmacError),
        ("add a grease stanza", HmacError),
        # age checks every X25519 stanza it meets, not only its own.
        ("extra argument on another stanza", HeaderError),
        ("extra argument on my stanza", HeaderError),
        ("rename my stanza's type", NoIdentityMatchError),
        ("replace my body", NoIdentityMatchError),
        ("lengthen my body", HeaderError),
        ("change another body", HmacError),
    ],
)
def test_altered_stanzas(change: str, expected: type[EnvelopeError]) -> None:
    stanzas = list(HEADER.stanzas)
    mine = stanzas[1]
    if change == "drop another recipient":
        del stanzas[2]
    elif change == "reorder stanzas":
        stanzas[0], stanzas[2] = stanzas[2], stanzas[0]
    elif change == "add a grease stanza":
        stanzas.append(Stanza("grease-x", ("a",), b"\x00" * 5))
    elif change == "extra argument on another stanza":
        stanzas[0] = Stanza(stanzas[0].type, (*stanzas[0].args, "x"), stanzas[0].body)
    elif change == "extra argument on my stanza":
        stanzas[1] = Stanza(mine.type, (*mine.args, "x"), mine.body)
    elif change == "rename my stanza's type":
        stanzas[1] = Stanza("x25519", mine.args, mine.body)
    elif change == "replace my body":
        stanzas[1] = Stanza(mine.type, mine.args, bytes(32))
    elif change == "lengthen my body":
        stanzas[1] = Stanza(mine.type, mine.args, mine.body + b"\x00")
    elif change == "change another body":
        stanzas[2] = Stanza(stanzas[2].type, stanzas[2].args, bytes(32))
    tampered = _rebuild(stanzas)
    for read in (_stream, _seekable):
        error, released = read(tampered)
        assert type(error) is expected, f"{change} ({read.__name__}): {error!r}"
        assert released == b""


def test_unaltered_rebuild_is_still_valid() -> None:
    """The stanza rebuild above is faithful: without a change the file opens."""
    assert _rebuild(list(HEADER.stanzas)) == SEALED


def test_wrong_file_key_is_an_hmac_failure() -> None:
    error, released = _stream(SEALED, identities=None, file_key=bytes(16))
    assert type(error) is HmacError and released == b""
    error, released = _seekable(SEALED, identities=None, file_key=bytes(16))
    assert type(error) is HmacError and released == b""
