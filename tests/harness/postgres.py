"""A private PostgreSQL 15 cluster for tests, from Debian's ``postgresql-15`` binaries.

``initdb`` into a temporary directory, then ``postgres`` in the foreground (so that the
harness holds its pid and can stop, kill or restart it), listening only on a Unix socket
in that directory unless a loopback port is asked for. Both run as an unprivileged
user: PostgreSQL refuses to run as root, and the tests usually are root here.

``fsync`` and ``synchronous_commit`` stay on: this cluster is where durability claims
are tested, so it must not be tuned for speed the way throwaway test databases often are.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

BIN = Path(os.environ.get("CENTRAL_PG_BIN", "/usr/lib/postgresql/15/bin"))
#: The cluster's superuser (initdb -U); trust authentication, reachable only through the
#: socket directory (mode 0700) or loopback.
SUPERUSER = "central"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    """The user to run PostgreSQL as: None if we are not root, else an unprivileged one."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("no unprivileged user to run PostgreSQL as")


class PostgresCluster:
    """One private cluster: ``start()``, ``dsn()``, ``new_database()``, ``restart()``,
    ``kill()``, ``stop()``."""

    def __init__(self, *, tcp: bool = False) -> None:
        for tool in ("initdb", "postgres"):
            if not (BIN / tool).exists():
                raise RuntimeError(f"{BIN / tool} is missing: run deploy/setup.sh"
                                   " (it installs postgresql-15)")
        self.dir = Path(tempfile.mkdtemp(prefix="central-pg-"))
        self.data = self.dir / "data"
        self.sockets = self.dir / "run"
        self.log_path = self.dir / "postgres.log"
        # The socket file is named after the port even when TCP is off, so a port is
        # needed either way; with TCP on it must also be free on loopback.
        self.port = free_port()
        self.tcp = tcp
        self.user = _run_as()
        self._proc: subprocess.Popen[bytes] | None = None
        #: Seconds from nothing to accepting connections (initdb + first start).
        self.startup_seconds: float | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def _prefix(self) -> list[str]:
        return [] if self.user is None else ["runuser", "-u", self.user, "--"]

    def init(self) -> None:
        self.sockets.mkdir(mode=0o700)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.dir, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        # initdb syncs its files at the end (no --no-sync): the cluster is a durability
        # test bed from its first byte.
        subprocess.run([*self._prefix(), str(BIN / "initdb"), "-D", str(self.data), "-A",
                        "trust", "-U", SUPERUSER, "-E", "UTF8", "--locale=C.UTF-8"],
                       check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        began = time.monotonic()
        if not self.data.exists():
            self.init()
        log = self.log_path.open("ab")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.log_path, entry.pw_uid, entry.pw_gid)
        self._proc = subprocess.Popen(
            [*self._prefix(), str(BIN / "postgres"), "-D", str(self.data),
             "-p", str(self.port), "-k", str(self.sockets),
             "-c", f"listen_addresses={'127.0.0.1' if self.tcp else ''}",
             "-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "full_page_writes=on",
             # Each store holds a pool plus one connection per upload lock.
             "-c", "max_connections=200",
             # Statements only, never their parameters, reach the log on an error
             # (PostgreSQL's default, spelled out: tests may store names).
             "-c", "log_parameter_max_length_on_error=0"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._wait_ready(began)

    def _wait_ready(self, began: float) -> None:
        deadline = time.monotonic() + 60
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self._proc.returncode}):\n"
                                   + self.log_text()[-2000:])
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2):
                    break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        if self.startup_seconds is None:
            self.startup_seconds = time.monotonic() - began

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (runuser forks it: the Popen pid is runuser's)."""
        pid_file = self.data / "postmaster.pid"
        if self._proc is None or self._proc.poll() is not None or not pid_file.exists():
            return None
        return int(pid_file.read_text().split()[0])

    def _signal_and_wait(self, sig: int, timeout: float = 30) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().split()[0]), sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        """Fast shutdown: sessions are ended, a checkpoint is written."""
        self._signal_and_wait(signal.SIGINT)

    def crash(self) -> None:
        """Immediate shutdown (SIGQUIT): no checkpoint, WAL replay at the next start."""
        self._signal_and_wait(signal.SIGQUIT)

    def restart(self, *, crash: bool = False) -> None:
        """Stop (or crash) and start again on the same data, port and socket."""
        if crash:
            self.crash()
        else:
            self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- connecting ----------------------------------------------------------------------
    def dsn(self, dbname: str = "postgres") -> str:
        host = "127.0.0.1" if self.tcp else str(self.sockets)
        return f"postgresql://{SUPERUSER}@/{dbname}?host={host}&port={self.port}"

    def new_database(self) -> str:
        """A fresh, empty database; its DSN."""
        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            # template0: nothing a test left in template1 leaks into the next one.
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            # FORCE: a store a failing test did not close must not keep the drop waiting.
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One private PostgreSQL 15 cluster for the session, stopped and removed at its end."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def postgres_dsn(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database in the session's cluster, dropped after the test."""
    if postgres_cluster.pid is None:  # a test stopped or crashed it and did not restart
        postgres_cluster.start()
    dsn = postgres_cluster.new_database()
    try:
        yield dsn
    finally:
        if postgres_cluster.pid is None:
            postgres_cluster.start()
        postgres_cluster.drop_database(dsn)

