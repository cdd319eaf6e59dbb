"""Passphrase files and armor against the real tools: Debian's ``age`` 1.1 and typage.

``age -p`` and ``age -d`` of a passphrase file read the passphrase from the
terminal only, so they run on a pseudo-terminal (``run_age_on_pty``), with
the passphrase typed at each prompt. age always seals with 2**18 (several
seconds each on a loaded machine), so the files it makes are made once per
module; everything we seal for the peers uses 2**10, which both accept.

Covered, both ways:

* a protected identity file made by our API opens with typage, and the
  identity inside (post-quantum and X25519) decrypts a file; age reads the
  same kind of file with ``-d -i`` (X25519 inside: age 1.1 has no hybrid);
* a protected identity file made by ``age -p`` (binary and armored) is read
  by ``read_protected_identity_file``, and its key opens what age sealed;
* a file we seal to a passphrase opens with ``age -d`` and with typage, and
  typage's passphrase files open here;
* armored files: ``age -a`` to us and ours to ``age -d``; typage likewise.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.envelope import (
    CHUNK_SIZE,
    ScryptIdentity,
    WrongPassphrase,
    X25519Identity,
    decrypt_stream,
    format_identity_file,
    open_bytes,
    open_sealed,
    open_with_passphrase,
    parse_identity,
    parse_identity_file,
    read_protected_identity_file,
    seal_bytes,
    seal_with_passphrase,
    write_protected_identity_file,
)
from sync.envelope.armor import BEGIN
from sync.envelope.header import INTRO
from sync.envelope.mlkem import MlkemIdentity
from tests.envelope_helpers import Typage, age_binary, ensure_typage, run_age_on_pty

PASS = "tangle-quiet-orbit-lantern"
LOW = 10


@pytest.fixture(scope="module")
def typage() -> Iterator[Typage]:
    ensure_typage()
    yield Typage()


def _secret_line(identity_file_text: str) -> str:
    lines = [ln for ln in identity_file_text.splitlines() if ln.startswith("AGE-SECRET-KEY-")]
    assert len(lines) == 1, "expected one identity in the file"
    return lines[0]


def _age_keygen(path: Path) -> X25519Identity:
    subprocess.run([age_binary("age-keygen"), "-o", str(path)], check=True, capture_output=True)
    (identity,) = parse_identity_file(path.read_text())
    assert isinstance(identity, X25519Identity)
    return identity


# ------------------------------------------------- files made by age -p (made once)


@pytest.fixture(scope="module")
def age_made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """``age -p`` on a pty: a protected identity file (binary) and an armored data file."""
    folder = tmp_path_factory.mktemp("age-p")
    key = folder / "key.txt"
    identity = _age_keygen(key)
    protected = folder / "key.age"
    code, said = run_age_on_pty(["-p", "-o", str(protected), str(key)], [PASS, PASS])
    assert code == 0, said
    key.unlink()  # only the protected form remains, as on a vetter's workstation
    data = folder / "data.txt"
    data.write_bytes(b"made by age -p -a\n" * 50)
    armored = folder / "data.age"
    code, said = run_age_on_pty(["-p", "-a", "-o", str(armored), str(data)], [PASS, PASS])
    assert code == 0, said
    return {"identity": identity, "protected": protected, "armored": armored,
            "data": data.read_bytes()}


def test_age_p_identity_file_opens_with_our_reader(age_made: dict[str, object]) -> None:
    protected = age_made["protected"]
    assert isinstance(protected, Path)
    raw = protected.read_bytes()
    assert raw.startswith(INTRO + b"-> scrypt ") and b" 18\n" in raw[:80]  # age's own choice
    (identity,) = read_protected_identity_file(protected, PASS)
    assert str(identity) == str(age_made["identity"])
    # The key inside opens what age seals to its recipient.
    sealed = subprocess.run(
        [age_binary(), "-r", str(identity.recipient())],
        input=b"for the vetting team", capture_output=True, check=True,
    ).stdout
    assert open_bytes(sealed, [identity]) == b"for the vetting team"


def test_age_p_armored_file_opens_here(age_made: dict[str, object]) -> None:
    armored = age_made["armored"]
    assert isinstance(armored, Path)
    raw = armored.read_bytes()
    assert raw.startswith(BEGIN + b"\n")
    # The streaming reader; the random-access one reads typage's below (2**18 is dear).
    assert open_with_passphrase(raw, PASS) == age_made["data"]
    with pytest.raises(WrongPassphrase):
        # The wrong passphrase costs a full 2**18 too: one check is enough.
        open_with_passphrase(raw, PASS + "x")


# ------------------------------------------------------- our files, to age and typage


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
def test_our_passphrase_file_opens_with_age_and_typage(
    tmp_path: Path, typage: Typage, armor: bool
) -> None:
    data = os.urandom(CHUNK_SIZE + 123)
    sealed = tmp_path / "ours.age"
    sealed.write_bytes(seal_with_passphrase(data, PASS, armor=armor, log2_n=LOW))
    out = tmp_path / "out.bin"
    code, said = run_age_on_pty(["-d", "-o", str(out), str(sealed)], [PASS])
    assert code == 0, said
    assert out.read_bytes() == data
    assert typage.run("decrypt-passphrase", data=sealed.read_bytes(), passphrase=PASS) == data
    wrong = typage.try_run("decrypt-passphrase", data=sealed.read_bytes(), passphrase="nope")
    assert wrong.returncode == 1


def test_wrong_passphrase_is_refused_by_age_too(tmp_path: Path) -> None:
    sealed = tmp_path / "ours.age"
    sealed.write_bytes(seal_with_passphrase(b"x", PASS, log2_n=LOW))
    out = tmp_path / "out.bin"
    code, said = run_age_on_pty(["-d", "-o", str(out), str(sealed)], ["not the passphrase"])
    assert code != 0 and "incorrect passphrase" in said


@pytest.mark.parametrize("kind", ["hybrid", "x25519"])
@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
def test_our_protected_identity_file_opens_with_typage(
    tmp_path: Path, typage: Typage, kind: str, armor: bool
) -> None:
    """As ``vet keygen`` will make them: the identity inside then decrypts a file."""
    identity = MlkemIdentity.generate() if kind == "hybrid" else X25519Identity.generate()
    path = tmp_path / "team.age"
    write_protected_identity_file(
        path, format_identity_file(identity), PASS, armor=armor, log2_n=LOW
    )
    text = typage.run("decrypt-passphrase", data=path.read_bytes(), passphrase=PASS).decode()
    secret = _secret_line(text)
    assert secret == str(identity)
    assert typage.run("recipient", secret).decode().strip() == str(identity.recipient())
    testimony = os.urandom(3 * CHUNK_SIZE + 5)
    sealed = seal_bytes(testimony, [identity.recipient()])
    assert typage.decrypt(sealed, secret) == testimony


def test_our_protected_identity_file_works_with_age_d_i(tmp_path: Path) -> None:
    identity = X25519Identity.generate()
    path = tmp_path / "key.age"
    write_protected_identity_file(path, format_identity_file(identity), PASS, log2_n=LOW)
    sealed = tmp_path / "data.age"
    sealed.write_bytes(seal_bytes(b"opened by age with our key file", [identity.recipient()]))
    out = tmp_path / "out.txt"
    code, said = run_age_on_pty(["-d", "-i", str(path), "-o", str(out), str(sealed)], [PASS])
    assert code == 0, said
    assert out.read_bytes() == b"opened by age with our key file"


def test_typage_passphrase_files_open_here(typage: Typage) -> None:
    data = os.urandom(2 * CHUNK_SIZE)
    for armor in (False, True):
        args = ["--work-factor", str(LOW), *(["--armor"] if armor else [])]
        sealed = typage.run("encrypt-passphrase", *args, data=data, passphrase=PASS)
        assert sealed.startswith(BEGIN if armor else INTRO)
        assert open_with_passphrase(sealed, PASS) == data
        with open_sealed(io.BytesIO(sealed), identities=[ScryptIdentity(PASS)]) as reader:
            reader.seek(CHUNK_SIZE)
            assert reader.read(5) == data[CHUNK_SIZE : CHUNK_SIZE + 5]


# ------------------------------------------------------------------------- armor


def test_armor_both_ways_with_age(tmp_path: Path) -> None:
    key = tmp_path / "key.txt"
    identity = _age_keygen(key)
    data = os.urandom(2 * CHUNK_SIZE + 1)
    theirs = subprocess.run(
        [age_binary(), "-a", "-r", str(identity.recipient())],
        input=data, capture_output=True, check=True,
    ).stdout
    assert theirs.startswith(BEGIN + b"\n")
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(theirs), out, identities=[identity])
    assert out.getvalue() == data
    ours = seal_bytes(data, [identity.recipient()], armor=True)
    done = subprocess.run(
        [age_binary(), "-d", "-i", str(key)], input=ours, capture_output=True, check=True
    )
    assert done.stdout == data


def test_armor_both_ways_with_typage(typage: Typage) -> None:
    identity_text, recipient_text = typage.keygen("hybrid")
    identity = parse_identity(identity_text)
    data = os.urandom(CHUNK_SIZE + 7)
    theirs = typage.run("encrypt", "--armor", recipient_text, data=data)
    assert theirs.startswith(BEGIN + b"\n")
    assert open_bytes(theirs, [identity]) == data
    ours = seal_bytes(data, [identity.recipient()], armor=True)
    assert typage.decrypt(ours, identity_text) == data
