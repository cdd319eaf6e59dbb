"""The seekable reader used for review playback, and the reader's limits."""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile

from sync.envelope import (
    CHUNK_SIZE,
    EnvelopeWriter,
    HeaderError,
    NoIdentityMatchError,
    X25519Identity,
    decrypt_stream,
    open_bytes,
    open_sealed,
    seal_bytes,
)
from sync.envelope.header import MAX_HEADER_SIZE, MAX_STANZAS
from sync.envelope.stream import ChunkOpener, ChunkSealer

IDENTITY = X25519Identity.generate()
DATA = random.Random(5).randbytes(5 * CHUNK_SIZE + 4321)
SEALED = seal_bytes(DATA, [IDENTITY.recipient()])


class _Pipe(io.RawIOBase):
    """A non-seekable source that hands out odd-sized reads."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._rng = random.Random(1)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def, override]
        n = min(len(buf), len(self._data), self._rng.randint(1, 70_000))
        buf[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def test_random_access_matches_the_plaintext() -> None:
    rng = random.Random(9)
    with open_sealed(io.BytesIO(SEALED), identities=IDENTITY) as reader:
        assert reader.seekable() and reader.readable() and not reader.writable()
        assert reader.size == len(DATA) and not reader.truncated
        for _ in range(200):
            pos = rng.randrange(len(DATA) + 10)
            size = rng.choice([1, 100, CHUNK_SIZE, 3 * CHUNK_SIZE + 5])
            assert reader.seek(pos) == pos
            assert reader.read(size) == DATA[pos : pos + size]
            assert reader.tell() == min(pos + size, max(pos, len(DATA)))
        assert reader.seek(-10, io.SEEK_END) == len(DATA) - 10
        assert reader.seek(3, io.SEEK_CUR) == len(DATA) - 7
        assert reader.read() == DATA[-7:]
        with pytest.raises(ValueError):
            reader.seek(-1)


def test_readinto_fills_the_whole_buffer() -> None:
    """libsndfile takes a short read for the end of the file, so reads span chunks."""
    with open_sealed(io.BytesIO(SEALED), identities=[IDENTITY]) as reader:
        reader.seek(CHUNK_SIZE - 3)
        buf = bytearray(2 * CHUNK_SIZE)
        assert reader.readinto(buf) == len(buf)
        assert bytes(buf) == DATA[CHUNK_SIZE - 3 : 3 * CHUNK_SIZE - 3]


def test_buffered_wrapper_and_close(tmp_path: Path) -> None:
    path = tmp_path / "x.age"
    path.write_bytes(SEALED)
    reader = open_sealed(path, identities=[IDENTITY])
    with io.BufferedReader(reader) as buffered:
        buffered.seek(12345)
        assert buffered.read(10) == DATA[12345:12355]
    assert reader.closed
    with pytest.raises(ValueError):
        reader.read(1)


def test_non_seekable_source_reads_in_order() -> None:
    with open_sealed(_Pipe(SEALED), identities=[IDENTITY]) as reader:
        assert not reader.seekable()
        with pytest.raises(io.UnsupportedOperation):
            reader.seek(0)
        got = bytearray()
        while block := reader.read(7000):
            got += block
        assert got == DATA
    out = io.BytesIO()
    decrypt_stream(_Pipe(SEALED), out, identities=[IDENTITY])
    assert out.getvalue() == DATA


def test_review_with_soundfile(tmp_path: Path) -> None:
    """Review playback: libsndfile reads the sealed take through the seekable reader."""
    rate = 48_000
    t = np.arange(rate * 2) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    for fmt, subtype in (("FLAC", "PCM_16"), ("OGG", "OPUS")):
        encoded = io.BytesIO()
        soundfile.write(encoded, tone, rate, format=fmt, subtype=subtype)
        path = tmp_path / f"take.{fmt.lower()}.age"
        with EnvelopeWriter(path, [IDENTITY.recipient()]) as writer:
            data = encoded.getvalue()
            for pos in range(0, len(data), 4000):
                writer.write(data[pos : pos + 4000])
            key = writer.file_key
        with open_sealed(path, file_key=key) as reader:
            frames, got_rate = soundfile.read(reader, dtype="int16")
        assert got_rate == rate
        if fmt == "FLAC":
            assert np.array_equal(frames, tone)
        else:
            assert abs(len(frames) - len(tone)) < rate // 10
        with open_sealed(path, file_key=key) as reader, soundfile.SoundFile(reader) as sound:
            sound.seek(rate)  # jump to 1 s, as the review screen's scrubber does
            assert len(sound.read(1000, dtype="int16")) == 1000


def test_no_identity_given_or_matching() -> None:
    with pytest.raises(ValueError):
        open_bytes(SEALED, [])
    with pytest.raises(NoIdentityMatchError):
        open_bytes(SEALED, [X25519Identity.generate()])


def test_header_size_limit() -> None:
    body = (b"A" * 64 + b"\n") * (MAX_HEADER_SIZE // 65 + 1) + b"\n"
    huge = b"age-encryption.org/v1\n-> grease\n" + body
    with pytest.raises(HeaderError, match="larger than"):
        open_bytes(huge + b"--- " + b"A" * 43 + b"\n", [IDENTITY])
    endless_line = b"age-encryption.org/v1\n-> " + b"y" * (MAX_HEADER_SIZE + 10)
    with pytest.raises(HeaderError, match="larger than"):
        open_bytes(endless_line, [IDENTITY])


def test_stanza_count_limit() -> None:
    many = b"age-encryption.org/v1\n" + b"-> grease\n\n" * (MAX_STANZAS + 1)
    with pytest.raises(HeaderError, match="stanzas"):
        open_bytes(many + b"--- " + b"A" * 43 + b"\n", [IDENTITY])
    with pytest.raises(ValueError):
        seal_bytes(b"x", [IDENTITY.recipient()] * (MAX_STANZAS + 1))


class _Endless(io.RawIOBase):
    """An endless header line, counting what it served."""

    def __init__(self) -> None:
        super().__init__()
        self.served = 0
        self._intro = b"age-encryption.org/v1\n-> "

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def, override]
        n = len(buf)
        buf[:n] = (self._intro + b"z" * n)[:n]
        self._intro = self._intro[n:]
        self.served += n
        return n


@pytest.mark.parametrize("reader", ["stream", "seekable"])
def test_header_limit_stops_reading(reader: str) -> None:
    """A hostile stream is not buffered much past the header limit."""
    src = _Endless()
    with pytest.raises(HeaderError, match="larger than"):
        if reader == "stream":
            decrypt_stream(src, io.BytesIO(), identities=[IDENTITY])
        else:
            open_sealed(src, identities=[IDENTITY])
    assert src.served < MAX_HEADER_SIZE + 64 * 1024


# ------------------------------------------------------------- keys are let go


def test_a_wiped_opener_or_sealer_holds_no_key_and_refuses_work() -> None:
    key = bytes(range(32))
    sealer = ChunkSealer(key)
    sealed = bytes(sealer.seal(0, b"secret words", last=True))
    opener = ChunkOpener(key)
    assert opener.open(0, sealed, last=True) == b"secret words"
    opener.wipe()
    sealer.wipe()
    assert opener._aead is None and sealer._aead is None
    assert not any(opener._buf)
    # "Wiped" must not pass for "did not authenticate" (None): it raises.
    with pytest.raises(ValueError, match="wiped"):
        opener.open(0, sealed, last=True)
    with pytest.raises(ValueError, match="wiped"):
        sealer.seal(0, b"more words", last=True)


@pytest.mark.parametrize("source", ["seekable", "pipe"])
def test_a_closed_reader_lets_go_of_its_key(source: str) -> None:
    src = io.BytesIO(SEALED) if source == "seekable" else _Pipe(SEALED)
    reader = open_sealed(src, identities=[IDENTITY])
    opener = reader._opener
    assert opener is not None
    assert reader.read(100) == DATA[:100]
    reader.close()
    assert reader._opener is None
    with pytest.raises(ValueError):
        reader.read(1)
    # Even a reference kept elsewhere (the pipe reader's chunk generator holds
    # one) can no longer decrypt anything.
    chunk0 = SEALED[len(SEALED) - len(DATA) - 16 * 6 :][: CHUNK_SIZE + 16]
    with pytest.raises(ValueError, match="wiped"):
        opener.open(0, chunk0, last=False)
