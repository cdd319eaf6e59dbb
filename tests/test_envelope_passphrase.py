"""The scrypt recipient and passphrase-protected identity files (our side only).

Work factors are low here (2**10) to keep the suite fast; the default of the
writer (2**18, as ``age -p``) and the reader's limit (2**22) are checked
without paying for them. Interop with age and typage is in
test_envelope_passphrase_interop.py.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sync.envelope import (
    EnvelopeError,
    HeaderError,
    KeyFormatError,
    NoIdentityMatchError,
    ScryptIdentity,
    ScryptRecipient,
    WrongPassphrase,
    X25519Identity,
    decrypt_stream,
    format_identity_file,
    open_bytes,
    open_sealed,
    open_with_passphrase,
    read_protected_identity_file,
    seal_bytes,
    seal_with_passphrase,
    write_protected_identity_file,
)
from sync.envelope.armor import BEGIN
from sync.envelope.header import INTRO, build_header, read_header
from sync.envelope.mlkem import MlkemIdentity
from sync.envelope.scrypt import DEFAULT_LOG2_N, DEFAULT_MAX_LOG2_N
from sync.envelope.stream import PAYLOAD_NONCE_SIZE, ChunkSealer, payload_key
from tests.envelope_helpers import run_on_pty

REPO = Path(__file__).resolve().parents[1]
LOW = 10  # log2 N for tests: 1 MiB and a few milliseconds
PASS = "correct horse battery staple"


def _header(sealed: bytes):  # type: ignore[no-untyped-def]
    return read_header(io.BytesIO(sealed))[0]


# ------------------------------------------------------------------ sealing


def test_round_trip_binary_and_armored() -> None:
    for armor in (False, True):
        sealed = seal_with_passphrase(b"secret", PASS, armor=armor, log2_n=LOW)
        assert sealed.startswith(BEGIN if armor else INTRO)
        assert open_with_passphrase(sealed, PASS) == b"secret"
    header = _header(seal_with_passphrase(b"x", PASS, log2_n=LOW))
    (stanza,) = header.stanzas
    assert stanza.type == "scrypt" and stanza.args[1] == str(LOW) and len(stanza.body) == 32


def test_each_file_gets_a_new_salt() -> None:
    salts = {_header(seal_with_passphrase(b"x", PASS, log2_n=LOW)).stanzas[0].args[0]
             for _ in range(3)}
    assert len(salts) == 3


def test_defaults_are_ages() -> None:
    assert DEFAULT_LOG2_N == 18 and ScryptRecipient(PASS).log2_n == 18
    assert DEFAULT_MAX_LOG2_N == 22 and ScryptIdentity(PASS).max_log2_n == 22
    with pytest.raises(ValueError):
        ScryptRecipient(PASS, log2_n=0)
    with pytest.raises(ValueError):
        ScryptRecipient("")  # an empty passphrase protects nothing
    assert PASS not in repr(ScryptRecipient(PASS)) + repr(ScryptIdentity(PASS))


def test_wrong_passphrase_is_its_own_error() -> None:
    sealed = seal_with_passphrase(b"secret", PASS, log2_n=LOW)
    with pytest.raises(WrongPassphrase) as info:
        open_with_passphrase(sealed, "incorrect horse")
    assert isinstance(info.value, NoIdentityMatchError)  # "no match" in vector terms
    assert PASS not in str(info.value)


def test_a_recipient_file_is_not_a_wrong_passphrase() -> None:
    identity = X25519Identity.generate()
    sealed = seal_bytes(b"x", [identity.recipient()])
    with pytest.raises(NoIdentityMatchError) as info:
        open_with_passphrase(sealed, PASS)
    assert not isinstance(info.value, WrongPassphrase)
    assert "not passphrase-encrypted" in str(info.value)
    # And a passphrase file opened with a key says what it is.
    with pytest.raises(NoIdentityMatchError, match="passphrase-encrypted"):
        open_bytes(seal_with_passphrase(b"x", PASS, log2_n=LOW), [identity])


def test_work_factor_limit() -> None:
    sealed = seal_with_passphrase(b"x", PASS, log2_n=12)
    assert open_with_passphrase(sealed, PASS, max_log2_n=12) == b"x"
    with pytest.raises(HeaderError, match="work factor is too high"):
        open_with_passphrase(sealed, PASS, max_log2_n=11)


def test_lazy_passphrase_is_asked_only_for_a_passphrase_file() -> None:
    asked: list[int] = []

    def ask() -> str:
        asked.append(1)
        return PASS

    identity = X25519Identity.generate()
    x_file = seal_bytes(b"x", [identity.recipient()])
    assert open_bytes(x_file, [identity, ScryptIdentity(ask)]) == b"x"
    assert asked == []
    lazy = ScryptIdentity(ask)
    for _ in range(2):
        assert open_bytes(seal_with_passphrase(b"y", PASS, log2_n=LOW), [lazy]) == b"y"
    assert asked == [1]


def test_streaming_and_seekable_readers_open_passphrase_files() -> None:
    data = os.urandom(200_000)
    sealed = seal_with_passphrase(data, PASS, armor=True, log2_n=LOW)
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(sealed), out, identities=[ScryptIdentity(PASS)])
    assert out.getvalue() == data
    with open_sealed(io.BytesIO(sealed), identities=[ScryptIdentity(PASS)]) as reader:
        reader.seek(150_000)
        assert reader.read(10) == data[150_000:150_010]


# ---------------------------------------------------- an scrypt stanza stays alone


def test_writer_refuses_scrypt_with_other_recipients() -> None:
    other = X25519Identity.generate().recipient()
    with pytest.raises(ValueError, match="only recipient"):
        seal_bytes(b"x", [ScryptRecipient(PASS, log2_n=LOW), other])
    with pytest.raises(ValueError, match="only recipient"):
        seal_bytes(b"x", [ScryptRecipient(PASS, log2_n=LOW), ScryptRecipient("b", log2_n=LOW)])


def _mixed_file(identity: X25519Identity, file_key: bytes) -> bytes:
    """A well-formed file whose header has an X25519 stanza that opens and an scrypt one."""
    stanzas = identity.recipient().wrap(file_key) + ScryptRecipient(PASS, log2_n=LOW).wrap(
        file_key
    )
    nonce = bytes(PAYLOAD_NONCE_SIZE)
    sealer = ChunkSealer(payload_key(file_key, nonce))
    return build_header(stanzas, file_key) + nonce + bytes(sealer.seal(0, b"mixed", last=True))


def test_reader_refuses_scrypt_alongside_a_stanza_that_would_open() -> None:
    """The C2SP vector's X25519 key does not match; here it does, and it still fails."""
    identity = X25519Identity.generate()
    mixed = _mixed_file(identity, os.urandom(16))
    for ids in ([identity], [ScryptIdentity(PASS)], [identity, ScryptIdentity(PASS)]):
        with pytest.raises(HeaderError, match="only one"):
            open_bytes(mixed, ids)
        with pytest.raises(HeaderError, match="only one"):
            open_sealed(io.BytesIO(mixed), identities=ids)


# ------------------------------------------------------ protected identity files


@pytest.mark.parametrize("kind", ["x25519", "hybrid"])
@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
def test_protected_identity_file_round_trip(tmp_path: Path, kind: str, armor: bool) -> None:
    identity = MlkemIdentity.generate() if kind == "hybrid" else X25519Identity.generate()
    path = tmp_path / "team.age"
    write_protected_identity_file(
        path, format_identity_file(identity), PASS, armor=armor, log2_n=LOW
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    assert raw.startswith(BEGIN if armor else INTRO)
    assert str(identity).encode() not in raw
    assert [p.name for p in tmp_path.iterdir()] == ["team.age"]  # no temporary left
    (back,) = read_protected_identity_file(path, PASS)
    assert str(back) == str(identity)
    with pytest.raises(WrongPassphrase):
        read_protected_identity_file(path, "not it")


def test_protected_identity_file_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "key.age"
    first, second = X25519Identity.generate(), X25519Identity.generate()
    write_protected_identity_file(path, format_identity_file(first), PASS, log2_n=LOW)
    write_protected_identity_file(path, format_identity_file(second), "new", log2_n=LOW)
    assert [str(i) for i in read_protected_identity_file(path, "new")] == [str(second)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.age"]


def test_refuses_to_protect_something_that_is_not_an_identity_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFormatError):
        write_protected_identity_file(tmp_path / "k.age", "# nothing here\n", PASS, log2_n=LOW)
    assert list(tmp_path.iterdir()) == []


def test_unprotected_identity_file_is_read_without_asking(tmp_path: Path) -> None:
    identity = X25519Identity.generate()
    path = tmp_path / "plain.txt"
    path.write_text(format_identity_file(identity))

    def never() -> str:
        raise AssertionError("asked for a passphrase for an unprotected file")

    assert [str(i) for i in read_protected_identity_file(path, never)] == [str(identity)]


def test_protected_file_with_garbage_inside_is_a_key_error(tmp_path: Path) -> None:
    path = tmp_path / "odd.age"
    path.write_bytes(seal_with_passphrase(b"not keys\n", PASS, log2_n=LOW))
    with pytest.raises(KeyFormatError):
        read_protected_identity_file(path, PASS)
    path.write_bytes(seal_with_passphrase(b"\xff\xfe", PASS, log2_n=LOW))
    with pytest.raises(KeyFormatError):
        read_protected_identity_file(path, PASS)
    path.write_bytes(seal_with_passphrase(b"x", PASS, log2_n=LOW)[:-5])
    with pytest.raises(EnvelopeError):
        read_protected_identity_file(path, PASS)


# ----------------------------------------------------------------------- CLI


def _cli(*args: str, stdin: bytes = b"", passphrase: str | None = None):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if k != "AGE_PASSPHRASE"}
    if passphrase is not None:
        env["AGE_PASSPHRASE"] = passphrase
    return subprocess.run(
        [sys.executable, "-m", "sync.envelope", *args],
        input=stdin, capture_output=True, cwd=REPO, timeout=60, env=env,
        start_new_session=True,  # no controlling terminal: nobody to ask
    )


def test_cli_passphrase_round_trip(tmp_path: Path) -> None:
    sealed = _cli("encrypt", "-p", "--scrypt-work-factor", str(LOW), "-a",
                  stdin=b"hello", passphrase=PASS)
    assert sealed.returncode == 0, sealed.stderr
    assert sealed.stdout.startswith(BEGIN)
    done = _cli("decrypt", stdin=sealed.stdout, passphrase=PASS)
    assert done.returncode == 0 and done.stdout == b"hello"
    wrong = _cli("decrypt", stdin=sealed.stdout, passphrase="nope")
    assert wrong.returncode == 1 and wrong.stdout == b""
    assert "wrong passphrase" in wrong.stderr.decode() and wrong.stderr.count(b"\n") == 1
    none = _cli("decrypt", stdin=sealed.stdout)
    assert none.returncode == 1 and "AGE_PASSPHRASE" in none.stderr.decode()


def test_cli_refusals(tmp_path: Path) -> None:
    identity = X25519Identity.generate()
    done = _cli("encrypt", "-p", "-r", str(identity.recipient()), stdin=b"x", passphrase=PASS)
    assert done.returncode == 1 and "-p cannot be combined" in done.stderr.decode()
    key = tmp_path / "key.txt"
    key.write_text(format_identity_file(identity))
    sealed = seal_with_passphrase(b"x", PASS, log2_n=LOW)
    done = _cli("decrypt", "-i", str(key), stdin=sealed, passphrase=PASS)
    assert done.returncode == 1 and "passphrase-encrypted" in done.stderr.decode()
    x_file = seal_bytes(b"x", [identity.recipient()])
    done = _cli("decrypt", stdin=x_file, passphrase=PASS)
    assert done.returncode == 1 and "not passphrase-encrypted" in done.stderr.decode()


def test_cli_reads_protected_identity_files(tmp_path: Path) -> None:
    identity = MlkemIdentity.generate()
    key = tmp_path / "team.age"
    write_protected_identity_file(key, format_identity_file(identity), PASS, log2_n=LOW)
    sealed = seal_bytes(b"testimony", [identity.recipient()], armor=True)
    done = _cli("decrypt", "-i", str(key), stdin=sealed, passphrase=PASS)
    assert done.returncode == 0 and done.stdout == b"testimony"
    wrong = _cli("decrypt", "-i", str(key), stdin=sealed, passphrase="nope")
    assert wrong.returncode == 1 and "wrong passphrase" in wrong.stderr.decode()


def test_cli_asks_on_the_terminal(tmp_path: Path) -> None:
    """Without $AGE_PASSPHRASE: asked twice to encrypt, once to decrypt, never echoed."""
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"typed at the prompt")
    sealed, back = tmp_path / "p.age", tmp_path / "back.txt"
    env_had = os.environ.pop("AGE_PASSPHRASE", None)
    try:
        prog = [sys.executable, "-m", "sync.envelope"]
        code, said = run_on_pty(
            [*prog, "encrypt", "-p", "--scrypt-work-factor", str(LOW), "-o", str(sealed),
             str(plain)],
            [PASS, PASS],
        )
        assert code == 0, said
        assert said.count("passphrase: ") == 2 and PASS not in said
        code, said = run_on_pty([*prog, "decrypt", "-o", str(back), str(sealed)], [PASS])
        assert code == 0, said
        assert back.read_bytes() == b"typed at the prompt"
        code, said = run_on_pty(
            [*prog, "encrypt", "-p", "-o", str(tmp_path / "no.age"), str(plain)], [PASS, "typo"]
        )
        assert code == 1 and "do not match" in said
    finally:
        if env_had is not None:
            os.environ["AGE_PASSPHRASE"] = env_had
