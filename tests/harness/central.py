"""A real ``central serve`` process on loopback, for tests that need the service.

``CentralService(data_dir)`` runs ``central init``, picks a free port, starts ``central
serve`` (stderr to a log file in the data dir's parent) and waits for ``/api/v1/health``.
``enrol_code()`` and ``vetter_token()`` use the CLI, as staff would, and read its last
line. ``kill()`` is SIGKILL (a crash); ``restart()`` comes back on the same port.

Fixtures for conftest: ``central`` (function-scoped, a fresh data dir under tmp_path).
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync.signing import SigningKey

REPO = Path(__file__).resolve().parents[2]
CENTRAL = [sys.executable, "-m", "sync.central"]


class CentralError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


#: Set by tests/conftest.py under ``--central-store=postgres``: makes a fresh PostgreSQL
#: database (its URL) for each service, so the same tests run on either metadata store.
DATABASE_FACTORY: Callable[[], str] | None = None
#: Set by tests/conftest.py under ``--central-store=postgres+s3`` (with DATABASE_FACTORY):
#: the S3 lines of a fresh bucket (endpoint, bucket, credentials) for each service.
S3_FACTORY: Callable[[], dict[str, str]] | None = None


def configure_store(data_dir: Path) -> None:
    """Under ``--central-store=postgres(+s3)``: write the data directory's config file,
    as an administrator would, naming a fresh database (and bucket). Called before
    ``central init`` by every test that makes a data directory, in a subprocess or
    in-process, so that the same tests run on either store. A no-op on the default."""
    if DATABASE_FACTORY is None or (data_dir / "central.conf").exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = {"CENTRAL_DATABASE_URL": DATABASE_FACTORY()}
    if S3_FACTORY is not None:
        lines.update(S3_FACTORY())
    (data_dir / "central.conf").write_text(
        "".join(f"{key}={value}\n" for key, value in lines.items()), encoding="utf-8")


def blob_files_only(why: str) -> None:
    """Skip the calling test when the services keep their blobs in S3: for facts of the
    files blob store alone (its disk filling up); ``why`` says where the S3 store's
    equivalent is tested."""
    if S3_FACTORY is not None:
        pytest.skip(f"a fact of blobs kept in files: {why}")


def conf_value(data_dir: Path, key: str) -> str | None:
    """``key`` from the data directory's config file (tests set nothing in the
    environment), or None."""
    conf = data_dir / "central.conf"
    if not conf.exists():
        return None
    for line in conf.read_text(encoding="utf-8").splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            return value.strip()
    return None


def store_sql(data_dir: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Raw SQL on the data directory's metadata store, whichever it is (one schema for
    both), committed; ``?`` placeholders. For tests that must look (or reach) past
    the API: an old heartbeat time, what the audit log holds."""
    url = conf_value(data_dir, "CENTRAL_DATABASE_URL")
    if url is None:
        conn = sqlite3.connect(data_dir / "central.sqlite", timeout=30)
        try:
            rows = conn.execute(query, params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()
    import psycopg  # only with --central-store=postgres

    with psycopg.connect(url) as pg:
        cur = pg.execute(query.replace("?", "%s"), params)
        return cur.fetchall() if cur.description is not None else []


#: The S3 upload ledger (issue 14): part of the stored state on PostgreSQL + S3.
LEDGER_TABLES = ("upload_blobs", "upload_blob_parts", "upload_tails")


def stored_blobs(data_dir: Path) -> dict[str, bytes]:
    """Every blob the data directory's store holds, by name: the files under uploads/,
    parts/, public/ and tmp/ on the default; every object under the prefix on S3 (with
    multipart uploads in progress, which a listing of objects does not show)."""
    bucket = conf_value(data_dir, "CENTRAL_S3_BUCKET")
    if bucket is None:
        return {str(p.relative_to(data_dir)): p.read_bytes()
                for sub in ("uploads", "parts", "public", "tmp")
                for p in (data_dir / sub).rglob("*") if p.is_file()}
    client = _s3_client(data_dir)
    prefix = conf_value(data_dir, "CENTRAL_S3_PREFIX") or ""
    blobs: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                 Prefix=prefix):
        for item in page.get("Contents", []):
            blobs[item["Key"]] = client.get_object(Bucket=bucket,
                                                   Key=item["Key"])["Body"].read()
    pending = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    for item in pending.get("Uploads", []):
        blobs[f"multipart:{item['Key']}:{item['UploadId']}"] = b""
    return blobs


def stored_state(data_dir: Path, tables: tuple[str, ...]) -> dict[str, Any]:
    """Everything a refused request could have left behind, on either store: the rows
    of ``tables`` (and the S3 ledger's), and every blob."""
    names = list(tables)
    if conf_value(data_dir, "CENTRAL_S3_BUCKET") is not None:
        names += LEDGER_TABLES
    rows = {t: sorted(store_sql(data_dir, f"SELECT * FROM {t}"), key=repr) for t in names}
    return {"tables": rows, "files": stored_blobs(data_dir)}


def _s3_client(data_dir: Path) -> Any:
    import boto3  # only with --central-store=postgres+s3

    return boto3.client(
        "s3", endpoint_url=conf_value(data_dir, "CENTRAL_S3_ENDPOINT"),
        aws_access_key_id=conf_value(data_dir, "AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=conf_value(data_dir, "AWS_SECRET_ACCESS_KEY"),
        region_name=conf_value(data_dir, "AWS_DEFAULT_REGION") or "us-east-1")


def remove_blob(data_dir: Path, name: str) -> None:
    """Delete one blob behind the service's back (a name from :func:`stored_blobs`):
    for tests of what the service does when bytes its rows name are gone."""
    bucket = conf_value(data_dir, "CENTRAL_S3_BUCKET")
    if bucket is None:
        (data_dir / name).unlink()
    else:
        _s3_client(data_dir).delete_object(Bucket=bucket, Key=name)


def stored_part(data_dir: Path, submission_id: str, sha256: str) -> bytes | None:
    """A stored part's bytes, read through the data directory's blob store; None if absent."""
    from sync.central.core import open_blobs
    from sync.central.storage.base import BlobMissing

    blobs = open_blobs(data_dir, create=False)
    try:
        return b"".join(blobs.read_part(submission_id, sha256))
    except BlobMissing:
        return None
    finally:
        if hasattr(blobs, "close"):
            blobs.close()


def stored_upload(data_dir: Path, upload_id: str) -> bytes | None:
    """The bytes an upload in progress has stored, without changing anything; None if
    the store holds no such upload. On S3 that is the ledger's tail while no whole part
    is stored (S3 cannot read a multipart upload's parts before it is completed)."""
    if conf_value(data_dir, "CENTRAL_S3_BUCKET") is None:
        path = data_dir / "uploads" / upload_id
        return path.read_bytes() if path.exists() else None
    rows = store_sql(data_dir, "SELECT completed FROM upload_blobs WHERE upload_id = ?",
                     (upload_id,))
    if not rows:
        return None
    assert not rows[0][0], "a completed upload: read it through the API instead"
    parts = store_sql(data_dir, "SELECT COUNT(*) FROM upload_blob_parts WHERE upload_id = ?",
                      (upload_id,))
    assert parts == [(0,)], "whole parts stored: only the tail can be read here"
    tail = store_sql(data_dir, "SELECT data FROM upload_tails WHERE upload_id = ?",
                     (upload_id,))
    return bytes(tail[0][0]) if tail else b""


def open_store(data_dir: Path) -> Any:
    """The data directory's metadata store (a MetaStore), whichever it is; close it."""
    from sync.central.core import open_meta

    return open_meta(data_dir, create=False)


class CentralService:
    """``central serve`` as a subprocess. Use as a context manager or call ``stop()``."""

    def __init__(self, data_dir: Path, *, port: int | None = None,
                 serve_args: list[str] | None = None, env: dict[str, str] | None = None,
                 start: bool = True, timeout: float = 30.0) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.serve_args = list(serve_args or [])
        self.extra_env = dict(env or {})
        self.timeout = timeout
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        configure_store(self.data_dir)
        self.init_output = self.cli("init")
        self.service_key = self.init_output.strip().splitlines()[-1]
        if start:
            self.start()

    # -- CLI -----------------------------------------------------------------------------
    def cli(self, *args: str, check: bool = True) -> str:
        """Run ``central <args> --data DIR``; return stdout (CentralError if it fails)."""
        argv = list(args)
        # --data belongs to the (sub)subcommand: put it after the words, before positionals
        # like the vetter's name; argparse accepts it anywhere after the subcommand words.
        done = subprocess.run([*CENTRAL, *argv, "--data", str(self.data_dir)],
                              capture_output=True, text=True, timeout=60, env=_env(),
                              cwd=REPO)
        if check and done.returncode != 0:
            raise CentralError(f"central {' '.join(args[:2])} exited {done.returncode}:"
                               f" {done.stderr.strip()}")
        return done.stdout

    def database_url(self) -> str | None:
        """The PostgreSQL URL in the data directory's config file; None: SQLite."""
        return conf_value(self.data_dir, "CENTRAL_DATABASE_URL")

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Raw SQL on the service's metadata store, whichever it is (see store_sql)."""
        return store_sql(self.data_dir, query, params)

    def enrol_code(self, name: str | None = None, expires: str = "1h") -> str:
        args = ["enrol-code", "--expires", expires]
        if name is not None:
            args += ["--name", name]
        return self.cli(*args).strip().splitlines()[-1]

    def vetter_token(self, name: str = "vetter") -> str:
        return self.cli("vetter", "add", name).strip().splitlines()[-1]

    def enrol_device(self, name: str | None = None) -> tuple[str, str, SigningKey]:
        """Enrol a fresh device key over HTTP: (device_id, token, signing key)."""
        key = SigningKey.generate()
        reply = httpx.post(f"{self.url}/api/v1/devices/enrol", timeout=10,
                           json={"code": self.enrol_code(name), "public_key": str(key.verify_key)})
        if reply.status_code != 201:
            raise CentralError(f"enrol answered {reply.status_code}: {reply.text}")
        body = reply.json()
        return body["device_id"], body["token"], key

    # -- process -----------------------------------------------------------------------------
    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise CentralError("already running")
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [*CENTRAL, "serve", "--data", str(self.data_dir), "--port", str(self.port),
                 *self.serve_args],
                stdout=log, stderr=subprocess.STDOUT, env=_env(self.extra_env), cwd=REPO)
        finally:
            log.close()
        self.wait_healthy()

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise CentralError(f"central serve exited {self.proc.returncode}:\n"
                                   + self.log_text()[-2000:])
            try:
                reply = httpx.get(f"{self.url}/api/v1/health", timeout=2)
                if reply.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise CentralError("central serve did not answer in time:\n"
                                   + self.log_text()[-2000:])
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: what a power cut or an OOM kill looks like to the service."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def restart(self, *, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port."""
        self.kill() if kill else self.stop()
        deadline = time.monotonic() + 10
        while True:  # the old socket may linger a moment
            try:
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.start()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> CentralService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralService]:
    """A fresh ``central serve`` on loopback, stopped after the test."""
    service = CentralService(tmp_path / "central")
    try:
        yield service
    finally:
        service.stop()


# -- helpers for tests that talk to the service (over loopback or in-process) ------------

def tus_headers(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0", **extra}


def tus_upload(client: httpx.Client, token: str, submission_id: str, part: str, data: bytes,
               *, chunk: int = 256 * 1024, base: str = "", checksum: bool = True) -> str:
    """Create an upload and PATCH ``data`` in chunks; return its path (``Location``)."""
    import hashlib

    from sync.wire import checksum_header, encode_metadata

    reply = client.post(f"{base}/api/v1/uploads/", headers=tus_headers(
        token, **{"Upload-Length": str(len(data)), "Upload-Metadata": encode_metadata(
            {"submission_id": submission_id, "part": part})}))
    if reply.status_code != 201:
        raise CentralError(f"tus create answered {reply.status_code}: {reply.text}")
    location = reply.headers["location"]
    offset = 0
    while offset < len(data):
        body = data[offset:offset + chunk]
        extra = {"Content-Type": "application/offset+octet-stream",
                 "Upload-Offset": str(offset)}
        if checksum:
            extra["Upload-Checksum"] = checksum_header("sha256", hashlib.sha256(body).digest())
        reply = client.patch(f"{base}{location}", content=body,
                             headers=tus_headers(token, **extra))
        if reply.status_code != 204:
            raise CentralError(f"tus patch answered {reply.status_code}: {reply.text}")
        offset = int(reply.headers["upload-offset"])
    return location


def signed_index(key: SigningKey, device_id: str, submission_id: str,
                 parts: dict[str, bytes]) -> Any:
    """The device-signed index for these parts (a ``SignedDocument``)."""
    import hashlib

    from sync.wire import PartEntry, SubmissionIndex

    entries = [PartEntry(name, len(data), hashlib.sha256(data).hexdigest())
               for name, data in parts.items()]
    return SubmissionIndex.build(submission_id=submission_id, device_id=device_id,
                                 recipients_version=0, parts=entries).sign(key)


def index_body(signed: Any) -> dict[str, str]:
    return {"index": signed.data.decode("utf-8"), "signature": signed.signature}


def new_submission_id() -> str:
    """A UUIDv7 text, as kiosks make them."""
    import secrets
    import uuid

    raw = bytearray(int(time.time() * 1000).to_bytes(6, "big") + secrets.token_bytes(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))
