"""The streaming writer: ciphertext-only disk, .part then rename, hashes, keys, failures."""

from __future__ import annotations

import ctypes
import errno
import gc
import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.envelope import (
    CHUNK_SIZE,
    EnvelopeWriter,
    PayloadError,
    Stanza,
    TruncatedError,
    X25519Identity,
    decrypt_stream,
    encrypt_stream,
    open_bytes,
    open_sealed,
    seal_bytes,
)
from sync.envelope import writer as writer_module
from sync.envelope.header import read_header
from sync.envelope.stream import ENC_CHUNK_SIZE, PAYLOAD_NONCE_SIZE

REPO = Path(__file__).resolve().parents[1]
IDENTITY = X25519Identity.generate()
RECIPIENT = IDENTITY.recipient()
MARKER = b"TESTIMONY-PLAINTEXT-MARKER-"


def stream_bytes(size: int, seed: int = 0) -> bytes:
    """A deterministic, non-repeating byte stream (the kill test regenerates it)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed.to_bytes(4, "big") + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def _open(path: Path, **kwargs) -> bytes:  # type: ignore[no-untyped-def]
    kwargs.setdefault("identities", [IDENTITY])
    out = io.BytesIO()
    with path.open("rb") as src:
        decrypt_stream(src, out, **kwargs)
    return out.getvalue()


def _payload_start(path: Path) -> int:
    with path.open("rb") as src:
        header, _ = read_header(src)
    return header.size + PAYLOAD_NONCE_SIZE


# ----------------------------------------------------------------- basics


def test_header_first_then_only_ciphertext(tmp_path: Path) -> None:
    target = tmp_path / "answer-1.opus.age"
    part = tmp_path / "answer-1.opus.age.part"
    writer = EnvelopeWriter(target, [RECIPIENT])
    start = _payload_start(part)  # the header and nonce are on disk at once
    assert part.stat().st_size == start
    assert part.stat().st_mode & 0o777 == 0o600
    data = (MARKER * 5000)[: 5 * CHUNK_SIZE + 123]
    view = memoryview(data)
    for pos in range(0, len(data), 7777):
        writer.write(view[pos : pos + 7777])
        on_disk = part.read_bytes()
        assert MARKER not in on_disk
        # At most one chunk of plaintext is held back: everything older is on disk.
        accepted = min(pos + 7777, len(data))
        assert len(on_disk) == start + (accepted - 1) // CHUNK_SIZE * ENC_CHUNK_SIZE
    assert not target.exists()
    sealed = writer.close()
    assert not part.exists() and sealed.path == target
    disk = target.read_bytes()
    assert MARKER not in disk
    assert sealed.size == len(disk)
    assert sealed.sha256 == hashlib.sha256(disk).hexdigest()
    assert _open(target) == data


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE])
def test_boundaries_and_review_with_the_file_key(tmp_path: Path, size: int) -> None:
    data = stream_bytes(size)
    with EnvelopeWriter(tmp_path / "x.age", [RECIPIENT]) as writer:
        writer.write(data)
        key = writer.file_key
    assert len(key) == 16
    # Review needs no identity: the file key alone opens it (and the MAC checks it).
    assert _open(tmp_path / "x.age", identities=None, file_key=key) == data
    with open_sealed(tmp_path / "x.age", file_key=key) as reader:
        assert reader.seekable() and reader.size == size
        for pos in sorted({0, size // 3, max(size - 5, 0), CHUNK_SIZE - 2, size}):
            reader.seek(pos)
            assert reader.read(10) == data[pos : pos + 10]
        reader.seek(-min(size, 7), io.SEEK_END)
        assert reader.read() == data[size - min(size, 7) :]


def test_drop_key_after_review(tmp_path: Path) -> None:
    with EnvelopeWriter(tmp_path / "x.age", [RECIPIENT]) as writer:
        writer.write(b"take one")
    key = writer.file_key
    assert _open(tmp_path / "x.age", identities=None, file_key=key) == b"take one"
    writer.drop_key()
    with pytest.raises(ValueError):
        writer.file_key  # noqa: B018
    assert _open(tmp_path / "x.age") == b"take one"  # the file is untouched


def test_file_key_copies_are_the_callers_and_drop_key_zeroes_the_writers(tmp_path: Path) -> None:
    with EnvelopeWriter(tmp_path / "x.age", [RECIPIENT]) as writer:
        writer.write(b"take one")
    first, second = writer.file_key, writer.file_key
    assert isinstance(first, bytearray) and len(first) == 16
    assert first == second and first is not second  # a new copy each call
    held = writer._file_key  # the writer's own buffer, reached only by this test
    assert isinstance(held, bytearray) and held == first and held is not first
    first[:] = bytes(16)  # the caller zeroes its copy: the writer's is untouched
    assert writer.file_key == second
    writer.drop_key()
    assert held == bytearray(16)  # zeroed in place, not just forgotten
    with pytest.raises(ValueError):
        writer.file_key  # noqa: B018
    # The copy handed out before is the caller's, and still opens the file.
    assert _open(tmp_path / "x.age", identities=None, file_key=bytes(second)) == b"take one"


def test_abort_and_garbage_collection_zero_the_writers_key(tmp_path: Path) -> None:
    writer = EnvelopeWriter(tmp_path / "x.age", [RECIPIENT])
    held = writer._file_key
    writer.abort()
    assert held == bytearray(16)
    writer = EnvelopeWriter(tmp_path / "y.age", [RECIPIENT])
    writer.write(b"kept")
    writer.close()  # close() keeps the key for review ...
    held = writer._file_key
    assert held is not None and held != bytearray(16)
    del writer  # ... until the writer itself is dropped
    gc.collect()
    assert held == bytearray(16)


def test_a_failed_start_zeroes_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[bytearray] = []
    real = writer_module._new_file_key

    def recording() -> bytearray:
        made.append(real())
        return made[-1]

    monkeypatch.setattr(writer_module, "_new_file_key", recording)
    (tmp_path / "x.age").write_bytes(b"already here")
    with pytest.raises(FileExistsError):
        EnvelopeWriter(tmp_path / "x.age", [RECIPIENT])
    # The one-shot path has no review, so its key is zeroed as soon as the sealer has it.
    assert open_bytes(seal_bytes(b"manifest", [RECIPIENT]), [IDENTITY]) == b"manifest"
    assert len(made) == 2 and made == [bytearray(16)] * 2


def test_large_writes_and_tiny_writes_give_the_same_plaintext(tmp_path: Path) -> None:
    data = stream_bytes(4 * CHUNK_SIZE + 99)
    with EnvelopeWriter(tmp_path / "big.age", [RECIPIENT]) as writer:
        writer.write(data[:10])
        writer.write(data[10 : 10 + 3 * CHUNK_SIZE])  # zero-copy path
        writer.write(bytearray(data[10 + 3 * CHUNK_SIZE :]))
        assert writer.bytes_accepted == len(data)
    assert _open(tmp_path / "big.age") == data


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "x.age"
    first = EnvelopeWriter(target, [RECIPIENT])
    with pytest.raises(FileExistsError):
        EnvelopeWriter(target, [RECIPIENT])  # its .part exists
    first.close()
    with pytest.raises(FileExistsError):
        EnvelopeWriter(target, [RECIPIENT])


def test_exception_in_context_aborts(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with EnvelopeWriter(tmp_path / "x.age", [RECIPIENT]) as writer:
            writer.write(b"secret words")
            raise RuntimeError("session abandoned")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError):
        writer.file_key  # noqa: B018 - the key is dropped
    with pytest.raises(ValueError):
        writer.write(b"more")


def test_abort_and_close_are_final(tmp_path: Path) -> None:
    writer = EnvelopeWriter(tmp_path / "x.age", [RECIPIENT])
    writer.write(b"a")
    writer.abort()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    writer = EnvelopeWriter(tmp_path / "y.age", [RECIPIENT])
    sealed = writer.close()
    assert writer.close() == sealed  # idempotent
    writer.abort()  # no effect on a closed file
    assert (tmp_path / "y.age").exists()
    with pytest.raises(ValueError):
        writer.write(b"late")


def test_needs_a_recipient(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        EnvelopeWriter(tmp_path / "x.age", [])
    assert list(tmp_path.iterdir()) == []


class _FakePQ:
    """A stand-in post-quantum recipient (a grease-like stanza nobody opens)."""

    post_quantum = True

    def wrap(self, file_key: bytes) -> list[Stanza]:
        return [Stanza("fake-pq", ("x",), os.urandom(32))]

    def __str__(self) -> str:
        return "age1fakepq"


def test_refuses_to_mix_post_quantum_and_classical(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="post-quantum"):
        EnvelopeWriter(tmp_path / "x.age", [_FakePQ(), RECIPIENT])
    assert list(tmp_path.iterdir()) == []
    with EnvelopeWriter(tmp_path / "x.age", [_FakePQ(), RECIPIENT], allow_mixed=True) as writer:
        writer.write(b"ok")
    assert _open(tmp_path / "x.age") == b"ok"


def test_accepts_recipient_strings(tmp_path: Path) -> None:
    with EnvelopeWriter(tmp_path / "x.age", [str(RECIPIENT)]) as writer:
        writer.write(b"hello")
    assert _open(tmp_path / "x.age") == b"hello"


# --------------------------------------------------------------- disk full


class _Disk:
    """Injects ENOSPC into the writer's pwrite after a byte budget, with short writes."""

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def pwrite(self, fd: int, data: memoryview, offset: int) -> int:
        if self.budget <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = os.pwrite(fd, data[: self.budget], offset)
        self.budget -= n
        return n


def _check_enospc_recovery(writer: EnvelopeWriter, data: bytes, write_size: int) -> None:
    """Write until ENOSPC; check the .part is cut at a chunk boundary."""
    part = writer.part_path
    start = _payload_start(part)
    for pos in range(0, len(data), write_size):
        try:
            writer.write(data[pos : pos + write_size])
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
            break
    else:
        pytest.fail("the disk never filled up")
    assert (part.stat().st_size - start) % ENC_CHUNK_SIZE == 0
    # The writer stays usable: further writes fail the same way, nothing is lost.
    before = writer.bytes_accepted
    with pytest.raises(OSError):
        writer.write(data[before : before + 2 * CHUNK_SIZE])
    assert (part.stat().st_size - start) % ENC_CHUNK_SIZE == 0


@pytest.mark.parametrize("write_size", [1000, 3 * CHUNK_SIZE + 5])
def test_enospc_injected(tmp_path: Path, write_size: int) -> None:
    data = stream_bytes(12 * CHUNK_SIZE)
    writer = EnvelopeWriter(tmp_path / "x.age", [RECIPIENT])
    disk = _Disk(budget=4 * ENC_CHUNK_SIZE + 1234)  # runs out in the middle of a chunk
    writer._pwrite = disk.pwrite
    _check_enospc_recovery(writer, data, write_size)
    with pytest.raises(OSError):
        writer.close()  # the final chunk does not fit either
    assert (
        writer.part_path.stat().st_size - _payload_start(writer.part_path)
    ) % ENC_CHUNK_SIZE == 0
    disk.budget = 10 * ENC_CHUNK_SIZE  # space freed
    accepted = writer.bytes_accepted
    assert accepted >= 4 * CHUNK_SIZE
    sealed = writer.close()
    assert _open(sealed.path) == data[:accepted]
    assert sealed.sha256 == hashlib.sha256(sealed.path.read_bytes()).hexdigest()


def test_enospc_then_more_writes(tmp_path: Path) -> None:
    data = stream_bytes(12 * CHUNK_SIZE)
    writer = EnvelopeWriter(tmp_path / "x.age", [RECIPIENT])
    disk = _Disk(budget=2 * ENC_CHUNK_SIZE + 99)
    writer._pwrite = disk.pwrite
    _check_enospc_recovery(writer, data, 5000)
    accepted = writer.bytes_accepted
    disk.budget = 1 << 30
    writer.write(data[accepted : accepted + 3 * CHUNK_SIZE + 7])
    sealed = writer.close()
    assert _open(sealed.path) == data[: accepted + 3 * CHUNK_SIZE + 7]


def test_fsync_failure_at_close_can_be_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = stream_bytes(2 * CHUNK_SIZE + 5)
    writer = EnvelopeWriter(tmp_path / "x.age", [RECIPIENT])
    writer.write(data)
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        writer.close()
    assert (
        writer.part_path.stat().st_size - _payload_start(writer.part_path)
    ) % ENC_CHUNK_SIZE == 0
    with pytest.raises(ValueError):
        writer.write(b"x")  # the final chunk is sealed: its plaintext is fixed
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert _open(writer.close().path) == data


def test_a_failed_directory_fsync_never_costs_the_sealed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = stream_bytes(CHUNK_SIZE + 10)
    target = tmp_path / "x.age"
    writer = EnvelopeWriter(target, [RECIPIENT])
    writer.write(data)

    def failing_fsync_dir(directory: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(writer_module, "_fsync_dir", failing_fsync_dir)
    with pytest.raises(OSError) as failure:
        writer.close()
    assert failure.value.errno == errno.EIO
    assert target.exists() and not writer.part_path.exists()
    writer.abort()  # a caller that gives up on the take ...
    # ... still has the sealed file: only the directory entry's durability was in doubt.
    assert target.exists()
    assert _open(target) == data
    assert writer.renamed and writer.closed
    with pytest.raises(ValueError):
        writer.file_key  # noqa: B018 - abort() drops the key all the same
    with pytest.raises(ValueError):
        writer.close()  # aborted is final


def test_close_after_a_failed_directory_fsync_retries_only_that(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = stream_bytes(2 * CHUNK_SIZE + 3)
    target = tmp_path / "x.age"
    writer = EnvelopeWriter(target, [RECIPIENT])
    writer.write(data)
    assert not writer.renamed
    fsyncs: list[Path] = []

    def failing_fsync_dir(directory: Path) -> None:
        fsyncs.append(directory)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(writer_module, "_fsync_dir", failing_fsync_dir)
    with pytest.raises(OSError):
        writer.close()
    assert writer.renamed and not writer.closed

    def no_more(*args: object) -> None:
        raise AssertionError("close() redid more than the directory fsync")

    writer._pwrite = no_more  # type: ignore[assignment]
    monkeypatch.setattr(writer_module, "_move_noreplace", no_more, raising=False)
    monkeypatch.setattr(writer_module, "_fsync_dir", fsyncs.append)
    sealed = writer.close()
    assert fsyncs == [tmp_path, tmp_path]
    assert sealed.path == target and writer.closed and writer.renamed
    assert sealed.sha256 == hashlib.sha256(target.read_bytes()).hexdigest()
    assert _open(target) == data
    assert writer.file_key  # close() keeps the key for review


def _renameat2_unsupported(*args: object) -> int:
    ctypes.set_errno(errno.EINVAL)  # what a filesystem without RENAME_NOREPLACE says
    return -1


@pytest.mark.parametrize("how", ["renameat2", "link", "renameat2-einval"])
def test_close_never_replaces_a_file_that_appeared_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how != "renameat2":
        fake = None if how == "link" else _renameat2_unsupported
        monkeypatch.setattr(writer_module, "_renameat2", fake, raising=False)
    target = tmp_path / "x.age"
    writer = EnvelopeWriter(target, [RECIPIENT])
    writer.write(b"the testimony")
    target.write_bytes(b"someone else's file")
    # The race, made certain: a check before the rename sees nothing, yet the
    # file is there by the time of the rename.
    with monkeypatch.context() as m:
        m.setattr(os.path, "lexists", lambda path: False)
        with pytest.raises(FileExistsError):
            writer.close()
    assert target.read_bytes() == b"someone else's file"
    assert not writer.renamed and not writer.closed
    assert writer.part_path.exists()  # kept, sealed, for the caller
    # The caller moves the other file away and closes again.
    target.rename(tmp_path / "other")
    sealed = writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "x.age"]
    assert _open(sealed.path) == b"the testimony"
    assert writer.renamed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_close_renames_with_renameat2_on_linux(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = getattr(writer_module, "_renameat2", None)
    assert real is not None, "libc has no renameat2 (glibc 2.28+ and musl 1.2.2+ do)"
    flags: list[int] = []

    def recording(*args: object) -> int:
        flags.append(args[-1])  # type: ignore[arg-type]
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(writer_module, "_renameat2", recording)
    with EnvelopeWriter(tmp_path / "x.age", [RECIPIENT]) as writer:
        writer.write(b"x")
    assert flags == [1]  # RENAME_NOREPLACE
    assert [p.name for p in tmp_path.iterdir()] == ["x.age"]


@pytest.mark.parametrize("how", ["link", "renameat2-einval"])
def test_close_without_renameat2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    fake = None if how == "link" else _renameat2_unsupported
    monkeypatch.setattr(writer_module, "_renameat2", fake, raising=False)
    data = stream_bytes(CHUNK_SIZE + 1)
    with EnvelopeWriter(tmp_path / "x.age", [RECIPIENT]) as writer:
        writer.write(data)
    assert [p.name for p in tmp_path.iterdir()] == ["x.age"]
    assert (tmp_path / "x.age").stat().st_nlink == 1
    assert _open(tmp_path / "x.age") == data


def test_abort_after_a_refused_rename_deletes_only_the_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "x.age"
    writer = EnvelopeWriter(target, [RECIPIENT])
    target.write_bytes(b"someone else's file")
    monkeypatch.setattr(os.path, "lexists", lambda path: False)
    with pytest.raises(FileExistsError):
        writer.close()
    writer.abort()
    assert [p.name for p in tmp_path.iterdir()] == ["x.age"]
    assert target.read_bytes() == b"someone else's file"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 384 KiB tmpfs mounted for the test (needs root; CI runs as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=384k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_enospc_on_a_real_full_filesystem(small_fs: Path) -> None:
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * 160 * 1024)
    data = stream_bytes(12 * CHUNK_SIZE)
    writer = EnvelopeWriter(small_fs / "answer.age", [RECIPIENT])
    _check_enospc_recovery(writer, data, 4096)
    with pytest.raises(OSError):
        writer.close()
    accepted = writer.bytes_accepted
    filler.unlink()  # the staff freed some space
    sealed = writer.close()
    assert sorted(p.name for p in small_fs.iterdir()) == ["answer.age"]
    assert _open(sealed.path) == data[:accepted]
    assert sealed.sha256 == hashlib.sha256(sealed.path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- kill -9

_CHILD = """
import hashlib, sys, time
from sync.envelope import EnvelopeWriter
writer = EnvelopeWriter(sys.argv[1], [sys.argv[2]])
print("ready", flush=True)
counter = 0
pending = b""
while True:
    # The same stream as stream_bytes(), fed in uneven pieces, at about
    # the pace of a live recording sped up.
    while len(pending) < 5000:
        pending += hashlib.sha256(bytes(4) + counter.to_bytes(8, "big")).digest()
        counter += 1
    size = 997 + counter % 4000
    writer.write(pending[:size])
    pending = pending[size:]
    time.sleep(0.0005)
"""


def test_kill_9_leaves_a_truncated_part_that_recovers(tmp_path: Path) -> None:
    target = tmp_path / "answer.age"
    part = tmp_path / "answer.age.part"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(target), str(RECIPIENT)],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        start = _payload_start(part)
        deadline = time.monotonic() + 30
        while part.stat().st_size < start + 6 * ENC_CHUNK_SIZE:
            assert time.monotonic() < deadline, "the child did not write"
            time.sleep(0.005)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert [p.name for p in tmp_path.iterdir()] == ["answer.age.part"]
    size = part.stat().st_size
    with pytest.raises(PayloadError) as failure:
        _open(part)
    if (size - start) % ENC_CHUNK_SIZE == 0:
        assert failure.type is TruncatedError
    # else the kill tore a chunk write: a damaged tail, which recovery drops.
    out = io.BytesIO()
    with part.open("rb") as src:
        result = decrypt_stream(src, out, identities=[IDENTITY], recover=True)
    recovered = out.getvalue()
    assert result.truncated
    assert len(recovered) >= 6 * CHUNK_SIZE and len(recovered) % CHUNK_SIZE == 0
    assert recovered == stream_bytes(len(recovered))
    with open_sealed(part, identities=[IDENTITY], recover=True) as reader:
        assert reader.truncated and reader.size == len(recovered)
        reader.seek(len(recovered) - 100)
        assert reader.read() == recovered[-100:]


# ------------------------------------------------------------ encrypt_stream


class _ShortReads(io.RawIOBase):
    """A pipe-like source: reads return anything from 1 byte to a bit over a chunk."""

    def __init__(self, data: bytes, seed: int) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._rng = random.Random(seed)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:  # type: ignore[no-untyped-def, override]
        n = min(len(buf), len(self._data), self._rng.choice([1, 100, 4096, CHUNK_SIZE + 3]))
        buf[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE])
def test_encrypt_stream_from_short_reads(size: int) -> None:
    data = stream_bytes(size, seed=3)
    for seed in range(3):
        out = io.BytesIO()
        written = encrypt_stream(_ShortReads(data, seed), out, [RECIPIENT])
        assert written == len(out.getvalue())
        assert open_bytes(out.getvalue(), [IDENTITY]) == data
