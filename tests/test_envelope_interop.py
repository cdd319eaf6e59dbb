"""Interoperability with Debian's ``age`` tool and with ``pyrage``, both ways.

Every size that sits on a chunk boundary, with one and with three
recipients: files we write open byte-identical with theirs, and theirs with
ours (streaming and seekable readers).
"""

from __future__ import annotations

import hashlib
import io
import subprocess
from pathlib import Path

import pyrage
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sync.envelope import (
    CHUNK_SIZE,
    EnvelopeWriter,
    X25519Identity,
    decrypt_stream,
    open_bytes,
    open_sealed,
    parse_identity_file,
    seal_bytes,
)
from tests.envelope_helpers import age_binary

SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 10 * 1024 * 1024]
SIZE_IDS = ["0B", "1B", "64KiB-1", "64KiB", "64KiB+1", "10MiB"]
COUNTS = [1, 3]
#: Write sizes cycled through when feeding the streaming writer.
WRITE_PATTERN = [1, 4095, 70_000, CHUNK_SIZE, 333]


def _payload(size: int) -> bytes:
    # Deterministic but not repetitive at chunk scale (a repeated block could
    # hide a chunk swap).
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest() * 64
        counter += 1
    return bytes(out[:size])


_payloads: dict[int, bytes] = {}


def payload(size: int) -> bytes:
    if size not in _payloads:
        _payloads[size] = _payload(size)
    return _payloads[size]


def _age_keys(tmp_path: Path, count: int) -> list[Path]:
    files = []
    for n in range(count):
        path = tmp_path / f"age-key-{n}.txt"
        subprocess.run([age_binary("age-keygen"), "-o", str(path)], check=True, capture_output=True)
        files.append(path)
    return files


def _write_in_pieces(writer: EnvelopeWriter, data: bytes) -> None:
    view = memoryview(data)
    pos = 0
    step = 0
    while pos < len(view):
        size = WRITE_PATTERN[step % len(WRITE_PATTERN)]
        writer.write(view[pos : pos + size])
        pos += size
        step += 1


def _seal_with_writer(path: Path, data: bytes, recipients: list) -> Path:
    with EnvelopeWriter(path, recipients) as writer:
        _write_in_pieces(writer, data)
    assert not path.with_name(path.name + ".part").exists()
    return path


# ------------------------------------------------------------- the age tool


@pytest.mark.parametrize("count", COUNTS, ids=lambda c: f"{c}rcpt")
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_ours_to_age(tmp_path: Path, size: int, count: int) -> None:
    key_files = _age_keys(tmp_path, count)
    identities = [parse_identity_file(p.read_text())[0] for p in key_files]
    recipients = [i.recipient() for i in identities]
    sealed = _seal_with_writer(tmp_path / "ours.age", payload(size), recipients)
    # The last recipient's stanza is the last one: it must be found too.
    out = subprocess.run(
        [age_binary(), "--decrypt", "-i", str(key_files[-1]), str(sealed)],
        check=True,
        capture_output=True,
    )
    assert out.stdout == payload(size)


@pytest.mark.parametrize("count", COUNTS, ids=lambda c: f"{c}rcpt")
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_age_to_ours(tmp_path: Path, size: int, count: int) -> None:
    key_files = _age_keys(tmp_path, count)
    plain = tmp_path / "plain"
    plain.write_bytes(payload(size))
    theirs = tmp_path / "theirs.age"
    args = [age_binary(), "--encrypt", "-o", str(theirs)]
    for key in key_files:
        args += ["-r", parse_identity_file(key.read_text())[0].recipient().__str__()]
    subprocess.run([*args, str(plain)], check=True, capture_output=True)
    identity = parse_identity_file(key_files[-1].read_text())
    out = io.BytesIO()
    with theirs.open("rb") as src:
        result = decrypt_stream(src, out, identities=identity)
    assert out.getvalue() == payload(size)
    assert result.size == size and not result.truncated
    with open_sealed(theirs, identities=identity) as reader:
        assert reader.size == size
        assert reader.read() == payload(size)


# ------------------------------------------------------------------- pyrage


@pytest.mark.parametrize("count", COUNTS, ids=lambda c: f"{c}rcpt")
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_ours_to_pyrage(tmp_path: Path, size: int, count: int) -> None:
    theirs = [pyrage.x25519.Identity.generate() for _ in range(count)]
    recipients = [str(i.to_public()) for i in theirs]  # our writer parses the strings
    sealed = _seal_with_writer(tmp_path / "ours.age", payload(size), recipients)
    assert pyrage.decrypt(sealed.read_bytes(), [theirs[-1]]) == payload(size)


@pytest.mark.parametrize("count", COUNTS, ids=lambda c: f"{c}rcpt")
@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_pyrage_to_ours(size: int, count: int) -> None:
    ours = [X25519Identity.generate() for _ in range(count)]
    recipients = [pyrage.x25519.Recipient.from_str(str(i.recipient())) for i in ours]
    ciphertext = pyrage.encrypt(payload(size), recipients)
    assert open_bytes(ciphertext, [ours[-1]]) == payload(size)
    with open_sealed(io.BytesIO(ciphertext), identities=[ours[0]]) as reader:
        assert reader.read() == payload(size)


def test_keys_cross_parse() -> None:
    """Their key strings are ours and ours are theirs."""
    theirs = pyrage.x25519.Identity.generate()
    ours = X25519Identity.parse(str(theirs))
    assert str(ours) == str(theirs)
    assert str(ours.recipient()) == str(theirs.to_public())
    mine = X25519Identity.generate()
    assert str(pyrage.x25519.Identity.from_str(str(mine)).to_public()) == str(mine.recipient())


# -------------------------------------------------------------- round trips


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.one_of(
        st.integers(0, 3 * CHUNK_SIZE + 10),
        st.sampled_from([k * CHUNK_SIZE + d for k in range(4) for d in (-1, 0, 1) if k or d >= 0]),
    ),
    count=st.integers(1, 5),
    split=st.integers(1, 100_000),
)
def test_round_trip_property(size: int, count: int, split: int) -> None:
    identities = [X25519Identity.generate() for _ in range(count)]
    data = payload(size)
    ciphertext = seal_bytes(data, [i.recipient() for i in identities])
    for identity in identities:
        assert open_bytes(ciphertext, [identity]) == data
    # And pyrage agrees on what we wrote.
    assert pyrage.decrypt(ciphertext, [pyrage.x25519.Identity.from_str(str(identities[0]))]) == data
    with open_sealed(io.BytesIO(ciphertext), identities=identities[-1:]) as reader:
        reader.seek(size // 2)
        assert reader.read(split) == data[size // 2 : size // 2 + split]
