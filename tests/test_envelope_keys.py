"""Key strings and key files: strict X25519 parsing, dispatch by prefix, age-keygen format."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sync.envelope import (
    KeyFormatError,
    X25519Identity,
    X25519Recipient,
    bech32,
    format_identity_file,
    parse_identity,
    parse_identity_file,
    parse_recipient,
    parse_recipients_file,
)
from tests.envelope_helpers import age_binary

# From the C2SP vectors: a known identity and its recipient.
IDENTITY = "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0"


def test_round_trip_and_age_keygen_agrees(tmp_path: Path) -> None:
    path = tmp_path / "key.txt"
    subprocess.run([age_binary("age-keygen"), "-o", str(path)], check=True, capture_output=True)
    text = path.read_text()
    identities = parse_identity_file(text)
    assert len(identities) == 1
    public = text.splitlines()[1].removeprefix("# public key: ")
    assert str(identities[0].recipient()) == public
    assert str(identities[0]) == text.splitlines()[2]
    assert str(parse_recipient(public)) == public


def test_format_identity_file_is_age_keygens() -> None:
    identity = X25519Identity.parse(IDENTITY)
    text = format_identity_file(identity, created=datetime(2026, 11, 24, 9, 30, 5, tzinfo=UTC))
    assert text == (
        f"# created: 2026-11-24T09:30:05Z\n# public key: {identity.recipient()}\n{IDENTITY}\n"
    )
    assert str(parse_identity_file(text)[0]) == IDENTITY


def test_identity_file_comments_blank_lines_crlf_and_several_keys() -> None:
    other = X25519Identity.generate()
    text = f"# one\r\n\r\n{IDENTITY}\r\n# two\n{other}\n\n"
    parsed = parse_identity_file(text)
    assert [str(i) for i in parsed] == [IDENTITY, str(other)]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "# only a comment\n",
        f" {IDENTITY}\n",  # no trimming: age does not trim either
        f"{IDENTITY} \n",
        IDENTITY.lower() + "\n",
        IDENTITY[:-1] + ("Q" if IDENTITY[-1] != "Q" else "P") + "\n",
        "age1qk7w0y2a9dy2lxxt0dvmhu8r9282jpsssnu9jrhqhtenwqts69qsusnwy9\n",
        "-----BEGIN AGE ENCRYPTED FILE-----\n",
        "AGE-PLUGIN-YUBIKEY-1QQQQ\n",
    ],
)
def test_bad_identity_files(text: str) -> None:
    with pytest.raises(KeyFormatError) as failure:
        parse_identity_file(text)
    assert "AGE-SECRET-KEY-1E" not in str(failure.value)  # never echo a secret


def test_recipients_file() -> None:
    a = X25519Identity.generate().recipient()
    b = X25519Identity.generate().recipient()
    assert parse_recipients_file(f"# team\n{a}\r\n\n{b}\n") == [a, b]
    with pytest.raises(KeyFormatError, match="line 2"):
        parse_recipients_file(f"{a}\nssh-ed25519 AAAAC3 me@host\n")
    with pytest.raises(KeyFormatError):
        parse_recipients_file("\n# none\n")


def _recipient(data: bytes, hrp: str = "age") -> str:
    return bech32.encode(hrp, data)


def test_recipient_from_raw_bytes() -> None:
    raw = bech32.decode(str(X25519Identity.generate().recipient()))[1]
    text = _recipient(raw)
    assert str(X25519Recipient.parse(text)) == text
    assert X25519Recipient.parse(text).public_bytes == raw


LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (2**255 - 20).to_bytes(32, "little"),
]


@pytest.mark.parametrize(
    "text",
    [
        _recipient(bytes(range(1, 32))),  # 31 bytes
        _recipient(bytes(range(1, 34))),  # 33 bytes
        _recipient(bytes(range(1, 33)), hrp="age-x"),
        _recipient(bytes(range(1, 33))).upper(),
        _recipient(bytes(range(1, 33)))[:-1] + "q",
        *[_recipient(point) for point in LOW_ORDER],
        "age1",
        "",
    ],
)
def test_bad_recipients(text: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_recipient(text)


def test_bad_identities() -> None:
    good = X25519Identity.generate()
    raw = bech32.decode(str(good))[1]
    for text in [
        bech32.encode("age-secret-key-", raw[:31], upper=True),
        bech32.encode("age-secret-key-", raw + b"\0", upper=True),
        bech32.encode("age-secret-key-x", raw, upper=True),
        str(good).lower(),
    ]:
        with pytest.raises(KeyFormatError):
            parse_identity(text)


def test_identity_repr_hides_the_secret() -> None:
    identity = X25519Identity.parse(IDENTITY)
    assert IDENTITY not in repr(identity)


def test_post_quantum_keys_fail_clearly_without_mlkem(monkeypatch: pytest.MonkeyPatch) -> None:
    import sync.envelope

    monkeypatch.setitem(sys.modules, "sync.envelope.mlkem", None)  # import fails
    monkeypatch.delattr(sync.envelope, "mlkem", raising=False)
    with pytest.raises(KeyFormatError, match="post-quantum keys not supported"):
        parse_recipient("age1pq1xyz")
    with pytest.raises(KeyFormatError, match="post-quantum keys not supported"):
        parse_identity("AGE-SECRET-KEY-PQ-1XYZ")


def test_post_quantum_keys_dispatch_to_mlkem() -> None:
    mlkem = pytest.importorskip("sync.envelope.mlkem", reason="hybrid type not written yet")
    identity = mlkem.MlkemIdentity.generate()
    assert isinstance(parse_identity(str(identity)), mlkem.MlkemIdentity)
    assert str(parse_recipient(str(identity.recipient()))) == str(identity.recipient())


# ------------------------------------------------------------- module shape

ENVELOPE_DIR = Path(__file__).resolve().parents[1] / "sync" / "envelope"
ENVELOPE_MODULES = sorted(
    p.stem for p in ENVELOPE_DIR.glob("*.py") if p.stem not in ("__init__", "__main__")
)


def test_each_envelope_module_imports_first_without_a_cycle() -> None:
    """Each module, imported first in a fresh interpreter: a cycle would show here."""
    code = "import importlib, sys\nimportlib.import_module('sync.envelope.' + sys.argv[1])\n"
    for name in ENVELOPE_MODULES:
        done = subprocess.run(
            [sys.executable, "-c", code, name],
            capture_output=True,
            text=True,
            cwd=ENVELOPE_DIR.parents[1],
            timeout=60,
        )
        assert done.returncode == 0, f"{name}: {done.stderr}"


def test_error_classes_are_imported_at_module_top() -> None:
    """errors.py imports nothing, so nothing needs to import it late to dodge a cycle."""
    errors = ast.parse((ENVELOPE_DIR / "errors.py").read_text())
    assert [
        node
        for node in ast.walk(errors)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        and getattr(node, "module", None) != "__future__"
    ] == []
    late = []
    for name in ENVELOPE_MODULES:
        tree = ast.parse((ENVELOPE_DIR / f"{name}.py").read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("errors"):
                    late.append(f"{name}.{func.name}")
    assert late == []


def test_the_writer_does_not_borrow_the_readers_private_helpers() -> None:
    tree = ast.parse((ENVELOPE_DIR / "writer.py").read_text())
    from_reader = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "reader"
        for alias in node.names
    ]
    assert from_reader == []
