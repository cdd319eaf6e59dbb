"""ASCII armor: the format age writes, strict reading, and the streaming properties.

The C2SP vectors (test_envelope_vectors.py) cover the malformed spellings;
these tests cover what the vectors cannot: multi-chunk armored files read
by both readers, what the streaming reader releases when the armor breaks in
the middle, truncation inside armor, and that our output is laid out exactly
as ``age -a`` lays out the same file.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sync.envelope import (
    CHUNK_SIZE,
    ArmorError,
    HeaderError,
    PayloadError,
    TruncatedError,
    X25519Identity,
    armor_bytes,
    dearmor_bytes,
    decrypt_stream,
    open_bytes,
    open_sealed,
    parse_identity_file,
    seal_bytes,
)
from sync.envelope.armor import BEGIN, END
from sync.envelope.stream import ENC_CHUNK_SIZE, PAYLOAD_NONCE_SIZE
from tests.envelope_helpers import HashingSink, age_binary

REPO = Path(__file__).resolve().parents[1]


def _data(size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


class _Pipe(io.RawIOBase):
    """A non-seekable source that hands out at most ``step`` bytes per read."""

    def __init__(self, data: bytes, step: int = 7_001) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def, override]
        n = min(len(buf), self._step, len(self._data))
        buf[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


@pytest.fixture(scope="module")
def identity() -> X25519Identity:
    return X25519Identity.generate()


# ------------------------------------------------------------------ the format


@pytest.mark.parametrize("size", [0, 1, 2, 3, 47, 48, 49, 95, 96, 97, 1000, 4800])
def test_encoding_round_trip_and_layout(size: int) -> None:
    data = _data(size)
    text = armor_bytes(data)
    assert dearmor_bytes(text) == data
    lines = text.split(b"\n")
    assert lines[0] == BEGIN and lines[-2] == END and lines[-1] == b""
    body = lines[1:-2]
    assert all(len(line) == 64 for line in body[:-1])
    if body:
        assert 0 < len(body[-1]) <= 64
    assert len(body) == -(-size // 48)


def test_line_endings_and_outer_whitespace() -> None:
    data = _data(200)
    text = armor_bytes(data)
    assert dearmor_bytes(text.replace(b"\n", b"\r\n")) == data
    assert dearmor_bytes(b" \t\r\n\n" + text + b"\r\n \n") == data
    assert dearmor_bytes(text.rstrip(b"\n")) == data  # no newline after END
    with pytest.raises(ArmorError):
        dearmor_bytes(b" " + text)  # whitespace on the BEGIN line itself
    with pytest.raises(ArmorError):
        dearmor_bytes(b"\n" * 1100 + text)  # more than age's 1 KiB of leading space
    with pytest.raises(ArmorError):
        dearmor_bytes(text + b"\n" * 1100)
    with pytest.raises(ArmorError):
        dearmor_bytes(text.replace(b"\n", b"\n\n", 2))  # an empty line after BEGIN


def test_layout_is_what_age_writes(tmp_path: Path) -> None:
    """Same binary length, same armored lines: compared with ``age -a`` itself."""
    key = tmp_path / "key.txt"
    subprocess.run([age_binary("age-keygen"), "-o", str(key)], check=True, capture_output=True)
    identity = parse_identity_file(key.read_text())[0]
    for size in (0, 5, 31, 32, 33, 100, 1000):
        data = _data(size)
        theirs = subprocess.run(
            [age_binary(), "-a", "-r", str(identity.recipient())],
            input=data, capture_output=True, check=True,
        ).stdout
        ours = seal_bytes(data, [identity.recipient()], armor=True)
        assert [len(line) for line in ours.split(b"\n")] == [
            len(line) for line in theirs.split(b"\n")
        ], size
        assert open_bytes(theirs, [identity]) == data
        assert subprocess.run(
            [age_binary(), "-d", "-i", str(key)], input=ours, capture_output=True, check=True
        ).stdout == data


# --------------------------------------------------------- both readers, big files


@pytest.mark.parametrize(
    "size", [0, CHUNK_SIZE - 1, CHUNK_SIZE, 3 * CHUNK_SIZE + 11], ids=["0", "64K-1", "64K", "3x"]
)
def test_armored_files_through_both_readers(identity: X25519Identity, size: int) -> None:
    data = _data(size)
    sealed = seal_bytes(data, [identity.recipient()], armor=True)
    assert sealed.startswith(BEGIN + b"\n")
    out = io.BytesIO()
    result = decrypt_stream(_Pipe(sealed), out, identities=[identity])
    assert out.getvalue() == data and result.size == size and not result.truncated
    with open_sealed(io.BytesIO(sealed), identities=[identity]) as reader:
        assert reader.seekable() and reader.size == size
        if size:
            reader.seek(size - 1)
            assert reader.read(1) == data[-1:]
        reader.seek(0)
        assert reader.read() == data
    with open_sealed(_Pipe(sealed), identities=[identity]) as reader:  # type: ignore[arg-type]
        assert not reader.seekable()
        assert reader.read() == data


def test_armored_file_on_disk_is_read_in_place(tmp_path: Path, identity: X25519Identity) -> None:
    data = _data(2 * CHUNK_SIZE + 5)
    path = tmp_path / "file.age"
    path.write_bytes(seal_bytes(data, [identity.recipient()], armor=True))
    with open_sealed(path, identities=[identity]) as reader:
        reader.seek(CHUNK_SIZE + 1)
        assert reader.read(10) == data[CHUNK_SIZE + 1 : CHUNK_SIZE + 11]


# ------------------------------------------------------------ streaming properties


def _armored_lines(binary: bytes) -> list[bytes]:
    return armor_bytes(binary).split(b"\n")


@pytest.mark.parametrize(("back", "released"), [(200, 2), (50, 3)], ids=["third", "final"])
def test_broken_armor_releases_only_chunks_before_it(
    identity: X25519Identity, back: int, released: int
) -> None:
    """Armor damaged inside a chunk: the chunks before it come out, not a byte more.

    The file has three full chunks and a final one of 116 bytes (100 + tag):
    200 bytes from the end is inside the third chunk, 50 inside the final one.
    """
    data = _data(3 * CHUNK_SIZE + 100)
    binary = seal_bytes(data, [identity.recipient()])
    lines = _armored_lines(binary)
    line = 1 + (len(binary) - back) // 48
    lines[line] = lines[line][:10] + b"*" + lines[line][11:]
    damaged = b"\n".join(lines)
    sink = HashingSink()
    with pytest.raises(ArmorError):
        decrypt_stream(_Pipe(damaged), sink, identities=[identity])
    assert sink.count == released * CHUNK_SIZE
    assert sink.hexdigest() == hashlib.sha256(data[: released * CHUNK_SIZE]).hexdigest()
    # The random-access reader checks the whole armor first: nothing at all.
    with pytest.raises(ArmorError):
        open_sealed(io.BytesIO(damaged), identities=[identity])


def test_garbage_after_end_withholds_the_final_chunk(identity: X25519Identity) -> None:
    data = _data(1000)
    sealed = seal_bytes(data, [identity.recipient()], armor=True)
    sink = HashingSink()
    with pytest.raises(ArmorError):
        decrypt_stream(io.BytesIO(sealed + b"garbage\n"), sink, identities=[identity])
    assert sink.count == 0


def test_truncation_inside_armor_is_reported(identity: X25519Identity) -> None:
    data = _data(2 * CHUNK_SIZE + 10)
    binary = seal_bytes(data, [identity.recipient()])
    header_len = len(binary) - PAYLOAD_NONCE_SIZE - (2 * ENC_CHUNK_SIZE + 10 + 16)
    # Cut after the first chunk, re-armored properly: the armor is fine, the file is short.
    cut = binary[: header_len + PAYLOAD_NONCE_SIZE + ENC_CHUNK_SIZE]
    sink = HashingSink()
    with pytest.raises(TruncatedError):
        decrypt_stream(io.BytesIO(armor_bytes(cut)), sink, identities=[identity])
    assert sink.count == CHUNK_SIZE  # the authentic non-final chunk, nothing else
    result = decrypt_stream(io.BytesIO(armor_bytes(cut)), io.BytesIO(), identities=[identity],
                            recover=True)
    assert result.truncated and result.size == CHUNK_SIZE
    # Cut mid-chunk: a payload failure, never a silent short read.
    with pytest.raises(PayloadError):
        open_bytes(armor_bytes(binary[:-1000]), [identity])
    # Armor cut short (no END line): an armor failure.
    with pytest.raises(ArmorError):
        open_bytes(armor_bytes(binary)[:-40], [identity])


def test_not_age_at_all_is_a_header_failure(identity: X25519Identity) -> None:
    with pytest.raises(HeaderError):
        open_bytes(b"hello, this is not an age file\n" * 10, [identity])
    with pytest.raises(ArmorError):
        open_bytes(b"garbage\n" + armor_bytes(b"x"), [identity])
    with pytest.raises(HeaderError):  # good armor around something that is not age
        open_bytes(armor_bytes(b"not age"), [identity])


# ---------------------------------------------------------------------- the CLI


def _cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "AGE_PASSPHRASE"}
    return subprocess.run(
        [sys.executable, "-m", "sync.envelope", *args],
        input=stdin, capture_output=True, cwd=REPO, timeout=60, env=env,
    )


def test_cli_armor_both_ways_with_age(tmp_path: Path) -> None:
    key = tmp_path / "key.txt"
    done = _cli("keygen", "-o", str(key))
    recipient = done.stderr.decode().split()[-1]
    data = _data(CHUNK_SIZE + 3)
    ours = _cli("encrypt", "--armor", "-r", recipient, stdin=data)
    assert ours.returncode == 0 and ours.stdout.startswith(BEGIN + b"\n")
    age_out = subprocess.run(
        [age_binary(), "-d", "-i", str(key)], input=ours.stdout, capture_output=True, check=True
    )
    assert age_out.stdout == data
    theirs = subprocess.run(
        [age_binary(), "-a", "-r", recipient], input=data, capture_output=True, check=True
    ).stdout
    done = _cli("decrypt", "-i", str(key), stdin=theirs)
    assert done.returncode == 0 and done.stdout == data
    bad = _cli("decrypt", "-i", str(key), stdin=theirs + b"trailing\n")
    # The first chunk authenticated as non-final before the armor ended badly:
    # it is out, the final chunk is not.
    assert bad.returncode == 1 and bad.stdout == data[:CHUNK_SIZE]
    assert bad.stderr.decode().count("\n") == 1 and "armor" in bad.stderr.decode()
