"""The keys ``vet keygen`` makes are standard ``age -p`` files, and back.

keys/team.age, keys/publisher.age and the printed (armored) escrow key open with
Debian's ``age -d`` and with typage, given the passphrase; and a team identity file
protected by typage (``encrypt-passphrase``) works as keys/team.age.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sync.envelope import parse_identity_file, seal_bytes
from sync.signing import parse_signing_key_file
from sync.vet.cli import run
from tests.envelope_helpers import Typage, ensure_typage, run_age_on_pty

PASSPHRASE = "interop passphrase"


def vet(home: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("VET_PASSPHRASE", PASSPHRASE)
    out, err = io.StringIO(), io.StringIO()
    code = run(["--home", str(home), *args], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def typage() -> Typage:
    ensure_typage()
    return Typage()


def test_keygen_files_open_with_age_and_typage(tmp_path: Path, monkeypatch, typage) -> None:
    home = tmp_path / "home"
    code, out, err = vet(home, monkeypatch, "keygen", "--work-factor", "12")
    assert code == 0, err
    printed = dict(line.split(": ", 1) for line in out.splitlines()[-3:])
    armored = out[out.index("-----BEGIN"):out.index("-----END AGE ENCRYPTED FILE-----") + 32]

    team_text = typage.run("decrypt-passphrase", data=(home / "keys/team.age").read_bytes(),
                           passphrase=PASSPHRASE).decode()
    assert str(parse_identity_file(team_text)[0].recipient()) == printed["recipient"]
    escrow_text = typage.run("decrypt-passphrase", data=armored.encode(),
                             passphrase=PASSPHRASE).decode()
    assert str(parse_identity_file(escrow_text)[0].recipient()) == printed["escrow"]
    publisher_text = typage.run("decrypt-passphrase",
                                data=(home / "keys/publisher.age").read_bytes(),
                                passphrase=PASSPHRASE).decode()
    assert str(parse_signing_key_file(publisher_text).verify_key) == printed["publisher"]

    out_file = tmp_path / "team.txt"
    status, transcript = run_age_on_pty(["-d", "-o", str(out_file),
                                         str(home / "keys/team.age")], [PASSPHRASE])
    assert status == 0, transcript
    assert out_file.read_text() == team_text


def test_a_team_key_protected_by_typage_works(tmp_path: Path, monkeypatch, typage) -> None:
    home = tmp_path / "home"
    assert vet(home, monkeypatch, "keygen", "--work-factor", "10")[0] == 0
    identity_line, recipient = typage.run("keygen", "--pq").decode().split()[:2]
    protected = typage.run("encrypt-passphrase", "--work-factor", "10",
                           data=f"# made by typage\n{identity_line}\n".encode(),
                           passphrase=PASSPHRASE)
    (home / "keys/team.age").write_bytes(protected)
    # A pulled submission sealed to typage's recipient opens with that team key.
    sid = "0192f0c8-0000-7000-8000-000000000001"
    folder = home / "pulled" / sid
    folder.mkdir(parents=True)
    (folder / "manifest.json.age").write_bytes(seal_bytes(b'{"country": "KE"}', [recipient]))
    (folder / "state.json").write_text(json.dumps(
        {"parts": {"manifest.json.age": "0" * 64}, "complete": True}))
    code, out, err = vet(home, monkeypatch, "show", sid)
    assert code == 0, err
    assert json.loads(out) == {"country": "KE"}
