"""Shared helpers for the envelope tests (fixtures live here, not in conftest)."""

from __future__ import annotations

import hashlib
import importlib
import io
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

VECTORS_DIR = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "age-vectors"


def age_binary(name: str = "age") -> str:
    """Path of Debian's age tool; missing is a failure, never a skip (CI installs it)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` not found on PATH: install Debian's age package (apt-get install age)"
        )
    return path


@dataclass
class Vector:
    name: str
    expect: str
    payload: str | None
    identities: list[str] = field(default_factory=list)
    passphrase: str | None = None
    armored: bool = False
    data: bytes = b""

    @property
    def kind(self) -> str:
        return self.name.split("_", 1)[0]


def load_vector(path: Path) -> Vector:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    fields: dict[str, list[str]] = {}
    for line in head.decode("utf-8").split("\n"):
        key, _, value = line.partition(": ")
        fields.setdefault(key, []).append(value)
    if fields.get("compressed", [""])[0] == "zlib":
        body = zlib.decompress(body)
    return Vector(
        name=path.name,
        expect=fields["expect"][0],
        payload=fields.get("payload", [None])[0],
        identities=fields.get("identity", []),
        passphrase=fields.get("passphrase", [None])[0],
        armored=fields.get("armored", ["no"])[0] == "yes",
        data=body,
    )


def all_vectors() -> list[Path]:
    return sorted(p for p in VECTORS_DIR.iterdir() if p.name != "ABOUT.md")


def module_available(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def skip_reason(vector: Vector) -> str | None:
    """Why this vector's kind is not run, or None when it is implemented."""
    if vector.armored or vector.kind == "armor":
        return "armor: ASCII armor is not implemented"
    if vector.kind == "scrypt" or vector.passphrase is not None:
        return "scrypt: passphrase stanzas are not implemented"
    if vector.kind == "hybrid" and not module_available("sync.envelope.mlkem"):
        return "hybrid: sync.envelope.mlkem is not importable"
    return None


class HashingSink(io.RawIOBase):
    """A writable that keeps only the SHA-256 and count of what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.hash = hashlib.sha256()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[no-untyped-def, override]
        self.hash.update(data)
        self.count += len(data)
        return len(data)

    def hexdigest(self) -> str:
        return self.hash.hexdigest()
