"""Shared helpers for the envelope tests (fixtures live here, not in conftest)."""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import io
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import time
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
    passphrases: list[str] = field(default_factory=list)
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
        passphrases=fields.get("passphrase", []),
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


# ----------------------------------------------------------- age on a terminal

_PROMPT = re.compile(rb"[Pp]assphrase[^\n]*?: ")


def run_age_on_pty(
    args: list[str], answers: list[str], *, timeout: float = 60.0
) -> tuple[int, str]:
    """Run Debian's ``age`` with a pseudo-terminal as its controlling terminal.

    ``age -p`` and ``age -d`` of a passphrase file read the passphrase from
    /dev/tty, never from stdin: the child gets a pty (``pty.fork``), and each
    time a passphrase prompt appears the next answer is typed into it.
    Returns the exit status and the terminal transcript (prompts, messages).
    Give ``-o FILE`` for the output: the child's stdout is the terminal too.
    """
    return run_on_pty([age_binary(), *args], answers, timeout=timeout)


def run_on_pty(
    argv: list[str], answers: list[str], *, timeout: float = 60.0
) -> tuple[int, str]:
    """Run ``argv`` on a new pseudo-terminal, typing ``answers`` at passphrase prompts."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: exec the program, or exit 127
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    transcript = bytearray()
    answered = 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.kill(pid, signal.SIGKILL)
                said = transcript.decode(errors="replace")
                raise TimeoutError(f"{argv} did not finish: {said}")
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal (it exited)
                data = b""
            if not data:
                break
            transcript += data
            prompts = len(_PROMPT.findall(bytes(transcript)))
            while answered < prompts:
                if answered >= len(answers):
                    os.kill(pid, signal.SIGKILL)
                    said = transcript.decode(errors="replace")
                    raise AssertionError(f"asked more than {len(answers)} times: {said}")
                os.write(fd, answers[answered].encode() + b"\n")
                answered += 1
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), transcript.decode(errors="replace")


# --------------------------------------------------------------------- typage

REPO = Path(__file__).resolve().parent.parent
TYPAGE_PEER = REPO / "tests" / "typage_peer.mjs"
TYPAGE_DIR = REPO / "tests" / ".cache" / "typage"
TYPAGE_SPEC = "age-encryption@0.3"
_TYPAGE_PACKAGE_JSON = TYPAGE_DIR / "node_modules" / "age-encryption" / "package.json"


def _typage_version() -> str | None:
    try:
        return str(json.loads(_TYPAGE_PACKAGE_JSON.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def ensure_typage() -> str:
    """Install typage 0.3.x into the ignored cache folder unless it is already there."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        # A failure, not a skip: this interop is part of the definition of done.
        pytest.fail("Node.js and npm are needed for the typage interop tests")
    TYPAGE_DIR.mkdir(parents=True, exist_ok=True)
    # Parallel test workers must not run two npm installs into one folder.
    with open(TYPAGE_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        version = _typage_version()
        if version is None or not version.startswith("0.3."):
            done = subprocess.run(
                ["npm", "install", "--prefix", str(TYPAGE_DIR), "--no-audit", "--no-fund",
                 TYPAGE_SPEC],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if done.returncode != 0:
                pytest.fail(f"npm install {TYPAGE_SPEC} failed:\n{done.stderr[-2000:]}")
            version = _typage_version()
    assert version is not None and version.startswith("0.3."), version
    return version


class Typage:
    """Runs the peer script: one Node.js process per operation."""

    def run(self, verb: str, *args: str, data: bytes = b"", passphrase: str | None = None) -> bytes:
        done = self.try_run(verb, *args, data=data, passphrase=passphrase)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return done.stdout

    def try_run(
        self, verb: str, *args: str, data: bytes = b"", passphrase: str | None = None
    ) -> subprocess.CompletedProcess:
        env = {**os.environ, "TYPAGE_DIR": str(TYPAGE_DIR)}
        env.pop("AGE_PASSPHRASE", None)
        if passphrase is not None:
            env["AGE_PASSPHRASE"] = passphrase
        return subprocess.run(
            ["node", str(TYPAGE_PEER), verb, *args],
            input=data,
            capture_output=True,
            timeout=120,
            env=env,
        )

    def keygen(self, kind: str) -> tuple[str, str]:
        out = self.run("keygen", *(["--pq"] if kind == "hybrid" else [])).decode()
        identity, recipient = out.split("\n")[:2]
        return identity, recipient

    def encrypt(self, data: bytes, *recipients: str) -> bytes:
        return self.run("encrypt", *recipients, data=data)

    def decrypt(self, sealed: bytes, *identities: str) -> bytes:
        return self.run("decrypt", *identities, data=sealed)
