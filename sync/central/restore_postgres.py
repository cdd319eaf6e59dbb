"""``central restore DIR`` into the scale-out stores: an EMPTY PostgreSQL database, with
the blobs in an S3 bucket (under its prefix) or in the data directory's files.

The backup is the one format backup.py writes from either store. The order:

1. Everything is checked before anything is written to the database or the bucket:
   the manifest against the files (each hashed), the rows against the files, the audit
   chain; then the targets: the database holds no row, the bucket (under the prefix)
   no object the backup does not name, the data directory nothing but its
   configuration (and a ``service.key``, which must be the backup's unless --force).
2. The schema, as ``central init`` makes it (core.open_meta / open_blobs).
3. The blobs, each checked again against the manifest's SHA-256 as it is written (S3:
   hashed before it is sent). Then ``service.key``.
4. Every row in ONE transaction, with the S3 ledger of the uploads put back.

Blobs first, rows last: a restore cut anywhere leaves no row without its blob, and
either every row or none. Rerunning the restore after such a cut works: the database is
still empty, and the bucket holds only objects the backup names (puts of the same key
write the same bytes again). An object under the prefix that the backup does not name
means the bucket is someone else's: refused. A multipart upload a cut restore started
stays behind until the bucket's lifecycle rule aborts it (invisible to readers).

``--force`` changes nothing about the database or the bucket: a PostgreSQL database
with rows, or a bucket with other objects, is always refused, because merging two
services' rows cannot be right and replacing them cannot be undone here; the
administrator drops and recreates the database (or names a new one). ``--force`` only
sets aside (renames, keeps) a data directory holding more than that, e.g. another
``service.key``, as on the default; its ``central.conf`` is copied into the new one.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sync.envelope.errors import KeyFormatError
from sync.signing import parse_signing_key_file

from .backup import (
    BackupError,
    Summary,
    _check_rows,
    _mkdirs,
    _read,
    _remove_tree,
    _sha256_file,
    _staging,
    _write,
    checked_manifest,
)
from .core import (
    CONFIG_NAME,
    DB_NAME,
    KEY_NAME,
    S3_BUCKET,
    S3_ENDPOINT,
    S3_PREFIX,
    TMP_DIR,
    Central,
    NotInitialised,
    config_value,
    open_blobs,
    open_meta,
)
from .storage.base import AuditEvent, ChecksumMismatch, StorageError
from .storage.file_blobs import FileBlobStore, fsync_dir
from .storage.sqlite_meta import SqliteMetaStore

if TYPE_CHECKING:
    import psycopg

    from .storage.s3_objects import PartReceipt, S3Objects

#: What a data directory on PostgreSQL may hold before a restore: its configuration,
#: the service key (the backup's, or set aside with --force) and the folders ``central
#: init`` makes (which may hold only files the backup names: a rerun after a cut).
_BLOB_DIRS = ("uploads", "parts", "public")
_ALLOWED = {CONFIG_NAME, KEY_NAME, TMP_DIR, *_BLOB_DIRS}


@dataclass
class _LedgerEntry:
    """One S3 upload put back: the row of s3_blobs.py's ``upload_blobs`` and its parts."""

    upload_id: str
    s3_upload_id: str
    size: int
    completed: bool
    parts: list[PartReceipt]


def _s3_key(relative: str) -> str:
    """The S3 key (s3_blobs.py's layout) of a backup path (file_blobs.py's layout)."""
    if relative.startswith("public/") and relative.endswith(".ogg"):
        return relative[:-len(".ogg")]
    return relative


def _s3_objects(data_dir: Path) -> S3Objects | None:
    """The bucket the configuration names (as core.open_blobs reads it), or None for
    blobs in files. Built here rather than through open_blobs, which needs the upload
    ledger's tables: the bucket is checked before the database is touched."""
    endpoint = config_value(data_dir, S3_ENDPOINT)
    bucket = config_value(data_dir, S3_BUCKET)
    if endpoint is None and bucket is None:
        return None
    if endpoint is None or bucket is None:
        raise BackupError(f"set both {S3_ENDPOINT} and {S3_BUCKET} (or neither)")
    access = config_value(data_dir, "AWS_ACCESS_KEY_ID")
    secret = config_value(data_dir, "AWS_SECRET_ACCESS_KEY")
    if access is None or secret is None:
        raise BackupError("S3 blob storage needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    from .storage.s3_objects import S3Objects, S3Settings

    settings = S3Settings(endpoint_url=endpoint, bucket=bucket, access_key_id=access,
                          secret_access_key=secret,
                          region=config_value(data_dir, "AWS_DEFAULT_REGION") or "us-east-1",
                          prefix=config_value(data_dir, S3_PREFIX) or "")
    try:
        objects = S3Objects(settings)
        objects.check_bucket()
    except StorageError as exc:
        # Never the secret key; the bucket and endpoint are not secrets.
        raise BackupError(f"S3 blob storage at {endpoint}: {exc}") from None
    return objects


# -- checks: the backup --------------------------------------------------------------------

def _check_backup(source: Path, stage: Path) -> tuple[dict[str, tuple[int, str]],
                                                       Counter[str]]:
    """The manifest, every file against it, the rows against the files and the audit
    chain. The database is copied into ``stage`` (hashed while copied): that copy is
    what the rows are read from, so the checked bytes are the written ones."""
    files = checked_manifest(source)
    checked: dict[str, tuple[int, str]] = {}
    for relative, expected in sorted(files.items()):
        if relative == DB_NAME:
            checked[relative] = _write(stage, DB_NAME, _read(source / DB_NAME))
        else:
            path = source / relative
            checked[relative] = (path.stat().st_size, _sha256_file(path))
        if checked[relative] != expected:
            raise BackupError(f"{relative} does not match the manifest (size or SHA-256):"
                              " the backup is damaged or was changed; refused")
    return files, _check_rows(stage / DB_NAME, checked)


def _upgrade(db: Path) -> None:
    """Bring the staged copy's schema up to date (an older backup), with the SQLite
    store's own code, and leave it one self-contained file again."""
    SqliteMetaStore(db, create=True).close()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


# -- checks: the targets -------------------------------------------------------------------

def _check_data_dir(target: Path, files: dict[str, tuple[int, str]], backup_key: str,
                    force: bool) -> bool:
    """True if the data directory must be set aside first (only with ``force``).

    It may stay if it holds its configuration, the folders ``central init`` makes (with
    only files the backup names in them: a rerun after a cut) and no service key or the
    backup's own."""
    if not target.exists():
        return False
    if not target.is_dir():
        raise BackupError(f"{target} is not a folder")
    reason = None
    for entry in sorted(target.iterdir()):
        if entry.name not in _ALLOWED:
            reason = f"holds {entry.name}"
            break
    for sub in _BLOB_DIRS:
        for folder, _, names in os.walk(target / sub):
            for name in names:
                relative = (Path(folder) / name).relative_to(target).as_posix()
                if reason is None and relative not in files:
                    reason = f"holds {relative}, which the backup does not name"
    key_path = target / KEY_NAME
    if reason is None and key_path.exists() \
            and key_path.read_bytes() != backup_key.encode("ascii"):
        reason = f"holds another {KEY_NAME} (kiosks pinned the backup's)"
    if reason is None:
        return False
    if not force:
        raise BackupError(f"{target} {reason}: restore into a data directory with only its"
                          f" {CONFIG_NAME}, or add --force to set this one aside (it is"
                          f" kept, renamed; its {CONFIG_NAME} is copied)")
    return True


def _set_aside(target: Path) -> Path:
    """Rename the data directory aside (kept, never deleted) and start a new one with a
    copy of its configuration, which names the stores being restored into."""
    aside = target.with_name(f"{target.name}.replaced-{int(time.time())}")
    os.replace(target, aside)
    target.mkdir(mode=0o700)
    if (aside / CONFIG_NAME).is_file():
        _write(target, CONFIG_NAME, _read(aside / CONFIG_NAME))
    fsync_dir(target.parent)
    return aside


def _check_bucket(objects: S3Objects, files: dict[str, tuple[int, str]]) -> int:
    """Objects under the prefix must all be ones the backup names (left by a restore
    cut short); their count."""
    named = {_s3_key(relative) for relative in files if relative not in (DB_NAME, KEY_NAME)}
    found = 0
    for info in objects.list_objects():
        if info.key not in named:
            where = f"{objects.bucket}/{objects.prefix}" if objects.prefix else objects.bucket
            raise BackupError(f"the bucket {where} already holds objects (first: {info.key}):"
                              " restore into an empty bucket or prefix; --force does not"
                              " change this")
        found += 1
    return found


def _check_database(dsn: str) -> None:
    from psycopg import OperationalError

    from .storage.snapshot import database_rows

    try:
        rows = database_rows(dsn)
    except OperationalError as exc:
        # libpq's reason names host, port, user and database, never the password.
        raise BackupError("cannot connect to the database in CENTRAL_DATABASE_URL:"
                          f" {str(exc).strip().splitlines()[-1]}") from None
    if rows:
        _refuse_rows(rows)


def _refuse_rows(rows: dict[str, int]) -> None:
    listed = ", ".join(f"{table}: {count}" for table, count in sorted(rows.items()))
    raise BackupError(f"the database in CENTRAL_DATABASE_URL already holds rows ({listed}):"
                      " central restore writes only into an empty database, and --force"
                      " does not change that on PostgreSQL; drop and recreate the database"
                      " (or name a new one), then restore again")


# -- writing blobs -------------------------------------------------------------------------

def _put_file(target: Path, relative: str, source: Path, expected: tuple[int, str]) -> None:
    """Write a blob into the data directory: a temporary file (hashed while written),
    then renamed over whatever a cut restore left there."""
    temp_name = f"{TMP_DIR}/restore-{secrets.token_hex(8)}"
    got = _write(target, temp_name, _read(source))
    if got != expected:
        (target / temp_name).unlink(missing_ok=True)
        raise BackupError(f"{relative} changed while it was restored; refused")
    final = _mkdirs(target, relative)
    os.replace(target / temp_name, final)
    fsync_dir(final.parent)


def _put_upload_s3(objects: S3Objects, upload_id: str, source: Path,
                   expected: tuple[int, str]) -> _LedgerEntry:
    """A finished upload's body as s3_blobs.py keeps one: a completed multipart upload
    of PART-sized parts, with its ledger entry (recorded with the rows)."""
    from .storage.s3_blobs import PART, _upload_key

    key = _upload_key(upload_id)
    s3_id = objects.create_multipart(key)
    receipts: list[PartReceipt] = []
    whole = hashlib.sha256()
    size = 0
    with source.open("rb") as handle:
        while body := handle.read(PART):
            whole.update(body)
            size += len(body)
            receipts.append(objects.upload_part(key, s3_id, len(receipts) + 1, body,
                                                hashlib.sha256(body).hexdigest()))
    if (size, whole.hexdigest()) != expected or not receipts:
        objects.abort_multipart(key, s3_id)
        raise BackupError(f"uploads/{upload_id} changed while it was restored; refused")
    objects.complete_multipart(key, s3_id, receipts)
    return _LedgerEntry(upload_id, s3_id, size, True, receipts)


def _put_blobs(source: Path, target: Path, db: Path, files: dict[str, tuple[int, str]],
               objects: S3Objects | None) -> list[_LedgerEntry]:
    """Every blob the backup holds, into the bucket or the data directory; the S3 ledger
    entries of its uploads (nothing recorded yet)."""
    ledger: list[_LedgerEntry] = []
    for relative, expected in sorted(files.items()):
        if relative in (DB_NAME, KEY_NAME) or relative.startswith("uploads/"):
            continue
        if objects is None:
            _put_file(target, relative, source / relative, expected)
            continue
        try:
            objects.put_object(_s3_key(relative), _read(source / relative), expected[1])
        except ChecksumMismatch:
            # Hashed before sending (s3_objects.py): nothing of it was stored.
            raise BackupError(f"{relative} changed while it was restored; refused"
                              ) from None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        uploads = conn.execute('SELECT id, "offset", length, finished_at FROM uploads'
                               " ORDER BY id").fetchall()
    finally:
        conn.close()
    for upload_id, offset, length, finished_at in uploads:
        relative = f"uploads/{upload_id}"
        if objects is None:
            _put_file(target, relative, source / relative, files[relative])
        elif finished_at is not None and offset == length:
            ledger.append(_put_upload_s3(objects, upload_id, source / relative,
                                         files[relative]))
        else:
            # Unfinished: the backup set it back to 0 (backup.py); a fresh, empty
            # multipart upload, as s3_blobs.create_upload makes one.
            from .storage.s3_blobs import _upload_key

            ledger.append(_LedgerEntry(upload_id, objects.create_multipart(
                _upload_key(upload_id)), 0, False, []))
    return ledger


def _ledger_writer(ledger: list[_LedgerEntry]) -> Callable[[psycopg.Cursor[Any]], None]:
    def write(cur: psycopg.Cursor[Any]) -> None:
        for entry in ledger:
            cur.execute("INSERT INTO upload_blobs(upload_id, s3_upload_id, size, completed)"
                        " VALUES (%s, %s, %s, %s)",
                        (entry.upload_id, entry.s3_upload_id, entry.size, entry.completed))
            cur.executemany("INSERT INTO upload_blob_parts(upload_id, number, size, etag,"
                            " sha256) VALUES (%s, %s, %s, %s, %s)",
                            [(entry.upload_id, p.number, p.size, p.etag, p.sha256)
                             for p in entry.parts])
    return write


# -- restore -------------------------------------------------------------------------------

def restore_postgres(source: Path, target: Path, dsn: str, *, force: bool = False,
                     after_blobs: Callable[[], None] | None = None) -> Summary:
    """Restore the backup ``source`` into the PostgreSQL database ``dsn`` and the blob
    store the configuration of ``target`` (the data directory) names.

    ``after_blobs`` runs between the blobs and the rows (tests cut the restore there).
    """
    from .storage.snapshot import NotEmpty, sqlite_to_postgres

    stage = _staging(target, "restore")
    try:
        files, counts = _check_backup(source, stage)
        backup_key = (source / KEY_NAME).read_text(encoding="ascii")
        try:
            service_key = str(parse_signing_key_file(backup_key).verify_key)
        except (KeyFormatError, ValueError):
            raise BackupError(f"{KEY_NAME} in the backup is not a service key") from None
        replace = _check_data_dir(target, files, backup_key, force)
        objects = _s3_objects(target)
        if objects is not None:
            _check_bucket(objects, files)
        _check_database(dsn)
        _upgrade(stage / DB_NAME)

        # Checked: from here on the targets are written. First the schema.
        aside = _set_aside(target) if replace else None
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(target, 0o700)  # it will hold the service's private key
        for sub in (*_BLOB_DIRS, TMP_DIR):
            (target / sub).mkdir(mode=0o700, exist_ok=True)
        try:
            open_meta(target, create=True).close()
            blobs = open_blobs(target, create=True)
            if not isinstance(blobs, FileBlobStore):
                blobs.close()
        except NotInitialised as exc:
            raise BackupError(str(exc)) from None
        try:
            ledger = _put_blobs(source, target, stage / DB_NAME, files, objects)
        except StorageError as exc:
            # S3 refused or could not be reached: rows were not written, so a rerun
            # (once the store answers) finds the database empty and goes on.
            raise BackupError(f"the blob store failed while blobs were restored"
                              f" ({type(exc).__name__}: {exc}); no row was written:"
                              " run the restore again") from None
        _put_file(target, KEY_NAME, source / KEY_NAME, files[KEY_NAME])
        fsync_dir(target)
        if after_blobs is not None:
            after_blobs()
        try:
            sqlite_to_postgres(stage / DB_NAME, dsn, then=_ledger_writer(ledger))
        except NotEmpty as exc:
            _refuse_rows(exc.tables)
    finally:
        _remove_tree(stage)
    svc = Central(target)
    try:
        svc.meta.append_audit(AuditEvent("cli", "backup_restored", "backup"))
    finally:
        svc.close()
    return Summary(path=target, files=len(files), counts=counts,
                   bytes=sum(s for s, _ in files.values()), service_key=service_key,
                   audit_entries=counts["audit_entries"] + 1, replaced=aside,
                   store="postgres+" + ("files" if objects is None else "s3"))


__all__ = ["restore_postgres"]
