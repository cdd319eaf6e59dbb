"""``python -m sync.envelope``: keygen, encrypt and decrypt, against the age tool."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sync.envelope import CHUNK_SIZE, parse_identity_file
from tests.envelope_helpers import VECTORS_DIR, age_binary, load_vector

REPO = Path(__file__).resolve().parents[1]
MARKER = b"PLAINTEXT-MARKER-"
PLAIN = (MARKER * 20_000)[: 2 * CHUNK_SIZE + 77]


def cli(
    *args: str, stdin: bytes = b"", cwd: Path | None = None, umask: int = -1
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sync.envelope", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd or REPO,
        timeout=60,
        umask=umask,  # -1: inherit
    )


def assert_one_line_failure(done: subprocess.CompletedProcess, *words: str) -> str:
    assert done.returncode != 0
    err = done.stderr.decode()
    assert err.endswith("\n") and err.count("\n") == 1, err
    for word in words:
        assert word in err.lower(), err
    assert MARKER not in done.stderr and MARKER not in done.stdout
    return err


def age(*args: str, stdin: bytes = b"") -> bytes:
    return subprocess.run(
        [age_binary(), *args], input=stdin, capture_output=True, check=True
    ).stdout


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, str]:
    """An identity file made by our keygen, and its recipient."""
    path = tmp_path / "key.txt"
    done = cli("keygen", "-o", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""
    err = done.stderr.decode()
    assert err.startswith("Public key: age1") and err.count("\n") == 1
    return path, err.split()[-1]


def test_keygen_file_is_age_keygen_format(key: tuple[Path, str]) -> None:
    path, recipient = key
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# created: ") and lines[0].endswith("Z")
    assert lines[1] == f"# public key: {recipient}"
    assert lines[2].startswith("AGE-SECRET-KEY-1") and len(lines) == 3
    assert path.stat().st_mode & 0o777 == 0o600
    # The age tools read it and agree on the recipient.
    out = subprocess.run(
        [age_binary("age-keygen"), "-y", str(path)], capture_output=True, check=True
    )
    assert out.stdout.decode().strip() == recipient
    assert str(parse_identity_file(path.read_text())[0].recipient()) == recipient


def test_keygen_to_stdout_and_no_overwrite(key: tuple[Path, str]) -> None:
    done = cli("keygen")
    assert done.returncode == 0
    identity = parse_identity_file(done.stdout.decode())[0]
    assert done.stderr.decode() == f"Public key: {identity.recipient()}\n"
    path, _ = key
    before = path.read_bytes()
    assert_one_line_failure(cli("keygen", "-o", str(path)), "exists")
    assert path.read_bytes() == before


def test_encrypt_for_age(tmp_path: Path, key: tuple[Path, str]) -> None:
    path, recipient = key
    (tmp_path / "plain").write_bytes(PLAIN)
    out = tmp_path / "out.age"
    done = cli("encrypt", "-r", recipient, "-o", str(out), str(tmp_path / "plain"))
    assert done.returncode == 0 and done.stdout == b"" and done.stderr == b""
    assert MARKER not in out.read_bytes()
    assert age("--decrypt", "-i", str(path), str(out)) == PLAIN


def test_encrypt_stdin_to_stdout_with_recipients_file(
    tmp_path: Path, key: tuple[Path, str]
) -> None:
    path, recipient = key
    other = tmp_path / "other.txt"
    subprocess.run([age_binary("age-keygen"), "-o", str(other)], capture_output=True, check=True)
    other_recipient = parse_identity_file(other.read_text())[0].recipient()
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# the vetting team\n\n{recipient}\r\n# escrow\n{other_recipient}\n")
    done = cli("encrypt", "-R", str(recipients), "-o", "-", "-", stdin=PLAIN)
    assert done.returncode == 0, done.stderr
    assert age("--decrypt", "-i", str(path), stdin=done.stdout) == PLAIN
    assert age("--decrypt", "-i", str(other), stdin=done.stdout) == PLAIN


def test_decrypt_from_age(tmp_path: Path, key: tuple[Path, str]) -> None:
    path, recipient = key
    sealed = age("-r", recipient, stdin=PLAIN)
    done = cli("decrypt", "-i", str(path), stdin=sealed)
    assert done.returncode == 0 and done.stdout == PLAIN and done.stderr == b""
    (tmp_path / "in.age").write_bytes(sealed)
    out = tmp_path / "out"
    done = cli("decrypt", "-i", str(path), "-o", str(out), str(tmp_path / "in.age"))
    assert done.returncode == 0 and out.read_bytes() == PLAIN


def test_decrypt_with_an_age_keygen_identity(tmp_path: Path) -> None:
    path = tmp_path / "age-key.txt"
    subprocess.run([age_binary("age-keygen"), "-o", str(path)], capture_output=True, check=True)
    recipient = parse_identity_file(path.read_text())[0].recipient()
    sealed = age("-r", str(recipient), stdin=PLAIN)
    assert cli("decrypt", "-i", str(path), stdin=sealed).stdout == PLAIN


def test_decrypt_failures_are_one_line_and_leave_no_output(
    tmp_path: Path, key: tuple[Path, str]
) -> None:
    path, recipient = key
    sealed = age("-r", recipient, stdin=PLAIN)
    out = tmp_path / "out"

    wrong = tmp_path / "wrong.txt"
    cli("keygen", "-o", str(wrong))
    done = cli("decrypt", "-i", str(wrong), "-o", str(out), stdin=sealed)
    assert_one_line_failure(done, "no identity")
    assert not out.exists()

    # Cut at a chunk boundary after the first chunk: truncated, and the
    # authenticated first chunk that was written to OUT is removed again.
    start = len(sealed) - (2 * (CHUNK_SIZE + 16) + 77 + 16)
    cut = sealed[: start + CHUNK_SIZE + 16]
    assert_one_line_failure(cli("decrypt", "-i", str(path), "-o", str(out), stdin=cut), "truncated")
    assert not out.exists()

    tampered = bytearray(sealed)
    tampered[-5] ^= 1
    done = cli("decrypt", "-i", str(path), "-o", str(out), stdin=bytes(tampered))
    assert_one_line_failure(done, "damaged")
    assert not out.exists()

    tampered = bytearray(sealed)
    tampered[60] ^= 1  # inside the header
    assert_one_line_failure(cli("decrypt", "-i", str(path), stdin=bytes(tampered)))

    assert_one_line_failure(cli("decrypt", "-i", str(path), stdin=b"not an age file"), "header")
    assert_one_line_failure(cli("decrypt", "-i", str(tmp_path / "missing.txt"), stdin=sealed))
    (tmp_path / "bad-key.txt").write_text("AGE-SECRET-KEY-1NOTAKEY\n")
    err = assert_one_line_failure(cli("decrypt", "-i", str(tmp_path / "bad-key.txt"), stdin=sealed))
    assert "NOTAKEY" not in err  # secret material is never echoed


def test_armor_and_passphrase_files(key: tuple[Path, str]) -> None:
    """Once refused, now read: armor is detected; a passphrase file is not for -i."""
    path, recipient = key
    armored = age("-a", "-r", recipient, stdin=b"x")
    done = cli("decrypt", "-i", str(path), stdin=armored)
    assert done.returncode == 0 and done.stdout == b"x"
    scrypt = load_vector(VECTORS_DIR / "scrypt").data
    assert_one_line_failure(cli("decrypt", "-i", str(path), stdin=scrypt), "passphrase")


def test_encrypt_failures(tmp_path: Path) -> None:
    assert_one_line_failure(cli("encrypt", "-r", "age1notarecipient", stdin=PLAIN))
    assert_one_line_failure(cli("encrypt", stdin=PLAIN), "no recipients")
    assert_one_line_failure(cli("encrypt", "-r", "ssh-ed25519 AAAA", stdin=PLAIN), "ssh")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    assert_one_line_failure(cli("encrypt", "-R", str(tmp_path / "empty.txt"), stdin=PLAIN))
    assert_one_line_failure(cli("frobnicate"))
    assert not any(p.name.endswith(".age") for p in tmp_path.iterdir())


def test_dash_means_standard_streams(tmp_path: Path, key: tuple[Path, str]) -> None:
    path, recipient = key
    sealed = cli("encrypt", "-r", recipient, "-", stdin=PLAIN).stdout
    assert cli("decrypt", "-i", str(path), "-o", "-", "-", stdin=sealed).stdout == PLAIN
    # An identity file from stdin, the input from a file.
    (tmp_path / "in.age").write_bytes(sealed)
    done = cli("decrypt", "-i", "-", str(tmp_path / "in.age"), stdin=path.read_bytes())
    assert done.stdout == PLAIN


def test_decrypted_output_is_private_whatever_the_umask(
    tmp_path: Path, key: tuple[Path, str]
) -> None:
    path, recipient = key
    sealed = tmp_path / "in.age"
    sealed.write_bytes(age("-r", recipient, stdin=PLAIN))
    out = tmp_path / "out"
    done = cli("decrypt", "-i", str(path), "-o", str(out), str(sealed), umask=0o022)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == PLAIN
    assert out.stat().st_mode & 0o777 == 0o600
    # An existing OUT is overwritten, as age does, but made 0600 first.
    existing = tmp_path / "existing"
    existing.write_bytes(b"old and longer than nothing" * 100_000)
    existing.chmod(0o644)
    done = cli("decrypt", "-i", str(path), "-o", str(existing), str(sealed), umask=0o022)
    assert done.returncode == 0, done.stderr
    assert existing.read_bytes() == PLAIN
    assert existing.stat().st_mode & 0o777 == 0o600
    # Ciphertext is not secret: encrypt -o keeps the usual mode, as age does.
    done = cli("encrypt", "-r", recipient, "-o", str(tmp_path / "x.age"), str(out), umask=0o022)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.age").stat().st_mode & 0o777 == 0o644


def test_decrypt_to_a_pipe_leaves_it_as_it_is(tmp_path: Path, key: tuple[Path, str]) -> None:
    """Only a regular OUT is made private: a FIFO (or /dev/null) is the user's choice."""
    path, recipient = key
    sealed = tmp_path / "in.age"
    sealed.write_bytes(age("-r", recipient, stdin=PLAIN))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fifo.chmod(0o644)
    received: list[bytes] = []
    drain = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    drain.start()
    done = cli("decrypt", "-i", str(path), "-o", str(fifo), str(sealed), umask=0o022)
    drain.join(timeout=60)
    assert done.returncode == 0, done.stderr
    assert received == [PLAIN]
    mode = fifo.stat().st_mode
    assert stat.S_ISFIFO(mode) and stat.S_IMODE(mode) == 0o644


def test_a_failed_decrypt_never_deletes_a_pipe_it_wrote_to(
    tmp_path: Path, key: tuple[Path, str]
) -> None:
    """Partial plaintext is removed from a regular OUT; a FIFO (or, as root, /dev/null)
    given as OUT is the user's and stays."""
    path, recipient = key
    sealed = bytearray(age("-r", recipient, stdin=PLAIN))
    sealed[-5] ^= 1  # the last chunk fails after the first was written
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    drain = threading.Thread(target=fifo.read_bytes, daemon=True)
    drain.start()
    done = cli("decrypt", "-i", str(path), "-o", str(fifo), stdin=bytes(sealed))
    drain.join(timeout=60)
    assert_one_line_failure(done, "damaged")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
