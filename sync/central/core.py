"""The service's data directory, its key, its settings, and the small secrets it makes.

Shared by the CLI and the HTTP API, so both read and write the same things the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sync.envelope.errors import KeyFormatError
from sync.signing import SigningKey, VerifyKey, format_signing_key_file, parse_signing_key_file

from .storage.base import AuditEvent, MetaStore
from .storage.file_blobs import FileBlobStore, fsync_dir
from .storage.sqlite_meta import SqliteMetaStore

if TYPE_CHECKING:
    from .storage.s3_blobs import S3BlobStore

DB_NAME = "central.sqlite"
KEY_NAME = "service.key"
#: Optional ``KEY=value`` lines in the data directory; the environment wins over it.
CONFIG_NAME = "central.conf"
#: ``postgresql://...``: metadata in PostgreSQL instead of DB_NAME (issue 14).
DATABASE_URL = "CENTRAL_DATABASE_URL"
#: Both set: blobs in this S3-compatible bucket, the upload ledger in DATABASE_URL's
#: database (issue 14). Optional CENTRAL_S3_PREFIX; credentials and region are the
#: standard AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION.
S3_ENDPOINT = "CENTRAL_S3_ENDPOINT"
S3_BUCKET = "CENTRAL_S3_BUCKET"
S3_PREFIX = "CENTRAL_S3_PREFIX"
TMP_DIR = "tmp"
#: Where an instance on S3 spools request bodies (default: the system's temporary
#: directory). Never the data directory: on the scale-out shape several instances share
#: it, read-only, and one instance's start-up must not clear another's spool.
SPOOL_DIR = "CENTRAL_SPOOL_DIR"
DEFAULT_MAX_UPLOAD = 2 * 1024**3
DEFAULT_UPLOAD_EXPIRY = 7 * 86400.0
DEFAULT_BODY_IDLE_TIMEOUT = 60.0
#: A part blob no submission names is deleted at start-up once it is this old: younger
#: ones may belong to a submission being inserted right now by another instance.
PART_ORPHAN_GRACE = 3600.0
#: Finished uploads that a stored submission already used are swept after this long.
CONSUMED_UPLOAD_GRACE = 3600.0
SWEEP_INTERVAL = 600.0
#: POST /withdraw attempts allowed per client address (ratelimit.py).
WITHDRAW_PER_MINUTE = 5
WITHDRAW_PER_HOUR = 30
#: The meta key holding the publishing team's verify key (idrverify1...).
PUBLISHER_KEY = "publisher_key"

# No 0/O, 1/I/L, so a code read aloud or copied by hand is typed right.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
_CODE = re.compile(rf"[{CODE_ALPHABET}]{{20}}")
_DURATION = re.compile(r"(\d{1,6})([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class NotInitialised(Exception):
    """The data directory was never made by ``central init``."""


@dataclass(frozen=True)
class Settings:
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    upload_expiry: float = DEFAULT_UPLOAD_EXPIRY
    body_idle_timeout: float = DEFAULT_BODY_IDLE_TIMEOUT
    sweep_interval: float = SWEEP_INTERVAL
    bench_sink: bool = False
    withdraw_per_minute: int = WITHDRAW_PER_MINUTE
    withdraw_per_hour: int = WITHDRAW_PER_HOUR


def parse_duration(text: str) -> float:
    """``30m``, ``24h``, ``7d``, ``90s`` -> seconds; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"not a duration like 30m, 24h or 7d: {text!r}")
    return float(int(match.group(1)) * _UNITS[match.group(2)])


def hash_secret(text: str) -> str:
    """Tokens and codes are high-entropy, so a plain SHA-256 is the right store."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_enrol_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(20))
    return "-".join(raw[i:i + 5] for i in range(0, 20, 5))


def normalise_code(text: str) -> str | None:
    """Upper case, dashes and spaces dropped; None if it cannot be a code."""
    cleaned = text.replace("-", "").replace(" ", "").upper()
    return cleaned if _CODE.fullmatch(cleaned) else None


def make_device_token() -> str:
    return "idrdev_" + secrets.token_urlsafe(32)


def make_vetter_token() -> str:
    return "idrvet_" + secrets.token_urlsafe(32)


def make_device_id() -> str:
    return "dev-" + secrets.token_hex(8)


def _write_private(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    fsync_dir(path.parent)


def parse_publisher_key(text: str) -> VerifyKey:
    """The publishing team's verify key (``idrverify1...``); ValueError if it is not one."""
    try:
        return VerifyKey.parse(text.strip())
    except (KeyFormatError, ValueError):
        raise ValueError("not a publishing key (idrverify1...)") from None


def set_publisher_key(meta: MetaStore, key: VerifyKey, *, actor: str = "cli") -> None:
    """Pin the key catalogs must be signed with (kept in the metadata store, so every
    instance of the service reads the same one). The audit line names no key."""
    meta.set_meta(PUBLISHER_KEY, str(key),
                  audit=AuditEvent(actor, "publisher_key_set", "publisher_key"))


def config_value(data_dir: Path, key: str) -> str | None:
    """``key`` from the environment, else from the data directory's CONFIG_NAME.

    The file is read on each call and holds only ``KEY=value`` lines (``#`` comments),
    so that several instances can share one read-only data directory.
    """
    value = os.environ.get(key)
    if value:
        return value
    path = data_dir / CONFIG_NAME
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, text = line.strip().partition("=")
        if sep and not name.startswith("#") and name.strip() == key and text.strip():
            return text.strip()
    return None


def open_meta(data_dir: Path, *, create: bool) -> MetaStore:
    """The metadata store the configuration names: PostgreSQL if DATABASE_URL is set,
    else SQLite in the data directory (the default, unchanged).

    On PostgreSQL only ``central init`` (``create``) and ``central migrate`` change the
    schema: a service that finds none, or one behind Alembic's head, raises
    NotInitialised ("run `central init`", "run `central migrate`") rather than
    migrating behind the operator. On SQLite ``create`` brings it to the head.
    """
    url = config_value(data_dir, DATABASE_URL)
    if url is None:
        from .storage.base import StorageError

        try:
            return SqliteMetaStore(data_dir / DB_NAME, create=create)
        except StorageError as exc:  # a schema a newer central made
            raise NotInitialised(f"{exc} ({data_dir / DB_NAME})") from None
    # Imported here: the default deployment never loads psycopg.
    from psycopg import OperationalError

    from .storage.base import StorageError
    from .storage.pg_meta import PostgresMetaStore

    # The messages never repeat the URL: it may carry a password.
    try:
        return PostgresMetaStore(url, create=create)
    except StorageError as exc:
        raise NotInitialised(f"{exc} (the database in {DATABASE_URL})") from None
    except OperationalError as exc:  # the pool's PoolTimeout is one too
        # libpq's reason names host, port, user and database, never the password.
        raise NotInitialised(f"cannot connect to the database in {DATABASE_URL}:"
                             f" {str(exc).strip().splitlines()[-1]}") from None


def open_blobs(data_dir: Path, *, create: bool) -> FileBlobStore | S3BlobStore:
    """The blob store the configuration names: S3 (with its upload ledger in the
    PostgreSQL database) if S3_ENDPOINT and S3_BUCKET are set, else files in the data
    directory (the default, unchanged). On S3 the bucket is checked now, so a wrong
    name or key fails at start-up rather than on a kiosk's first upload; only
    ``central init`` (``create``) makes the ledger tables."""
    endpoint = config_value(data_dir, S3_ENDPOINT)
    bucket = config_value(data_dir, S3_BUCKET)
    if endpoint is None and bucket is None:
        return FileBlobStore(data_dir)
    if endpoint is None or bucket is None:
        raise NotInitialised(f"set both {S3_ENDPOINT} and {S3_BUCKET} (or neither)")
    url = config_value(data_dir, DATABASE_URL)
    if url is None:
        # The ledger of S3 uploads (and the offsets it moves with) lives in PostgreSQL.
        raise NotInitialised(f"S3 blob storage needs PostgreSQL: set {DATABASE_URL}")
    access = config_value(data_dir, "AWS_ACCESS_KEY_ID")
    secret = config_value(data_dir, "AWS_SECRET_ACCESS_KEY")
    if access is None or secret is None:
        raise NotInitialised("S3 blob storage needs AWS_ACCESS_KEY_ID and"
                             " AWS_SECRET_ACCESS_KEY")
    # Imported here: the default deployment never loads boto3.
    from psycopg import OperationalError

    from .storage.base import StorageError
    from .storage.s3_blobs import S3BlobStore
    from .storage.s3_objects import S3Objects, S3Settings

    settings = S3Settings(endpoint_url=endpoint, bucket=bucket, access_key_id=access,
                          secret_access_key=secret,
                          region=config_value(data_dir, "AWS_DEFAULT_REGION") or "us-east-1",
                          prefix=config_value(data_dir, S3_PREFIX) or "")
    spool = config_value(data_dir, SPOOL_DIR)
    try:
        objects = S3Objects(settings)
        objects.check_bucket()
        return S3BlobStore(objects, url, create=create,
                           spool_dir=None if spool is None else Path(spool))
    except StorageError as exc:
        # Never the secret key; the bucket and endpoint are not secrets.
        raise NotInitialised(f"S3 blob storage at {endpoint}: {exc}") from None
    except OperationalError as exc:
        raise NotInitialised(f"cannot connect to the database in {DATABASE_URL}:"
                             f" {str(exc).strip().splitlines()[-1]}") from None


def _on_s3(data_dir: Path) -> bool:
    return config_value(data_dir, S3_BUCKET) is not None


def init(data_dir: Path, *, publisher_key: VerifyKey | None = None) -> VerifyKey:
    """Make (or leave as it is) a data directory; return the service's public key."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if data_dir.stat().st_mode & 0o777 != 0o700:
        # Only when needed: an instance's read-only mount of a shared data directory
        # (the scale-out shape) can run `central init` again, which then writes nothing.
        os.chmod(data_dir, 0o700)
    if not _on_s3(data_dir):
        # The files default keeps its blobs here; on S3 the folder holds only the key
        # and central.conf, so that instances can share it read-only.
        for sub in ("uploads", "parts", "public", TMP_DIR):
            (data_dir / sub).mkdir(exist_ok=True)
    meta = open_meta(data_dir, create=True)
    try:
        if publisher_key is not None:
            set_publisher_key(meta, publisher_key)
    finally:
        meta.close()
    blobs = open_blobs(data_dir, create=True)  # S3: the ledger tables, and the bucket
    if not isinstance(blobs, FileBlobStore):
        blobs.close()
    key_path = data_dir / KEY_NAME
    if key_path.exists():
        key = parse_signing_key_file(key_path.read_text(encoding="ascii"))
    else:
        key = SigningKey.generate()
        _write_private(key_path, format_signing_key_file(key))
    fsync_dir(data_dir)  # works on a read-only mount too
    return key.verify_key


class Central:
    """An opened data directory: metadata, blobs, the signing key and the settings."""

    def __init__(self, data_dir: Path, settings: Settings | None = None) -> None:
        db = data_dir / DB_NAME
        key_path = data_dir / KEY_NAME
        on_postgres = config_value(data_dir, DATABASE_URL) is not None
        if not (on_postgres or db.is_file()) or not key_path.is_file():
            raise NotInitialised(f"{data_dir} is not a central data directory:"
                                 f" run `central init --data {data_dir}` first")
        self.data_dir = data_dir
        self.settings = settings or Settings()
        # On SQLite, opening with create=True also brings an older schema up to date;
        # on PostgreSQL the schema is `central init`'s and `central migrate`'s alone.
        self.meta = open_meta(data_dir, create=not on_postgres)
        try:
            self.blobs: FileBlobStore | S3BlobStore = open_blobs(data_dir, create=False)
        except BaseException:
            self.meta.close()
            raise
        self.key = parse_signing_key_file(key_path.read_text(encoding="ascii"))
        self._private_tmp = _on_s3(data_dir)
        if self._private_tmp:
            # This process's own spool folder, removed on close (see SPOOL_DIR).
            spool = config_value(data_dir, SPOOL_DIR)
            self.tmp = Path(tempfile.mkdtemp(prefix="central-spool-", dir=spool))
        else:
            self.tmp = data_dir / TMP_DIR
            self.tmp.mkdir(exist_ok=True)
        from .ratelimit import RateLimiter

        self.withdraw_limiter = RateLimiter(
            [(self.settings.withdraw_per_minute, 60.0), (self.settings.withdraw_per_hour, 3600.0)])

    def publisher_key(self) -> VerifyKey | None:
        """The pinned publishing key, read each time (``central set-publisher-key`` may
        change it while the service runs)."""
        text = self.meta.get_meta(PUBLISHER_KEY)
        return None if text is None else VerifyKey.parse(text)

    def clear_tmp(self) -> int:
        """Remove spooled chunks a previous run left (never part of any upload)."""
        count = 0
        for entry in self.tmp.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            count += 1
        return count

    def close(self) -> None:
        if not isinstance(self.blobs, FileBlobStore):
            self.blobs.close()
        self.meta.close()
        if self._private_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
