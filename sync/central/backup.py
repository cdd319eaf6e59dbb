"""``central backup DIR`` and ``central restore DIR``: the default deployment's data
directory (SQLite and files), copied while ``central serve`` runs and takes uploads.

Consistency rule: every row in the backup's database has its file in the backup, with
the size and SHA-256 the row states. It holds because of the order:

1. the database first, with SQLite's online backup API (one point in time);
2. then, for each row of that copy, its blob, read through the BlobStore and hashed
   while copied. Parts and story audio are written durably *before* their row is
   inserted, and never change once referenced, so each row's file already exists
   and has the bytes the row names. (Copying the files first would miss the files of
   rows committed between the copy and the snapshot.)

Uploads: a finished upload never changes again, so its body is copied and checked
against the SHA-256 its row holds; one the sweep deleted meanwhile (or whose bytes no
longer match) loses its row in the copy, as start-up reconciliation would drop it. An
unfinished upload's body is still growing: its row is kept with its offset set back to
0 and an empty body, so the kiosk's HEAD answers 0 after a restore and it sends the
file again (reconcile.py treats a row without its body the same way).

The backup holds the service's private signing key (``service.key``): files are 0600,
folders 0700, and the whole backup must be kept as secret as the key. The manifest's
SHA-256 sums catch a damaged, truncated or incomplete copy; they cannot stop someone
who holds the backup (and so the key) from forging one.

Restore checks every file against the manifest while copying it into a staging folder
next to the target, then the rows against the files and the audit chain, and only then
renames the staging folder into place: a refused backup leaves nothing behind.

One format for both stores (issue 14). On PostgreSQL the backup is the same: the
metadata is a SQLite database file with the SQLite store's schema, written from ONE
``REPEATABLE READ, READ ONLY`` transaction (storage/snapshot.py: one point in time, as
step 1 above), then the blobs are read through the blob store (files or S3) and checked
against the rows, as step 2. So a backup of either store restores into either:
``central restore`` writes into whatever store the target's configuration names
(restore_postgres.py for PostgreSQL, with blobs in S3 or files). That is also the
administrator's way from the one-directory default to the scale-out shape.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .core import (
    DATABASE_URL,
    DB_NAME,
    KEY_NAME,
    S3_BUCKET,
    S3_ENDPOINT,
    TMP_DIR,
    Central,
    config_value,
)
from .storage.audit_chain import first_broken
from .storage.base import AuditEvent, AuditRow, BlobMissing
from .storage.file_blobs import FileBlobStore, fsync_dir
from .storage.sqlite_meta import SqliteMetaStore

FORMAT = "idr-central-backup/1"
MANIFEST = "manifest.json"
COPY_SIZE = 1024 * 1024
_HEX64 = r"[0-9a-f]{64}"
_SID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# The only paths a backup may hold: a manifest naming anything else is refused, so a
# restore never writes outside its target.
_PATHS = re.compile(rf"{re.escape(DB_NAME)}|{re.escape(KEY_NAME)}|parts/{_SID}/{_HEX64}"
                    rf"|public/[a-z0-9][a-z0-9_-]{{0,63}}/{_HEX64}\.ogg|uploads/[0-9a-f]{{32}}")


class BackupError(Exception):
    """A backup that cannot be made, or a backup or target that restore refuses."""


@dataclass
class Summary:
    path: Path
    files: int = 0
    bytes: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    service_key: str = ""
    audit_entries: int = 0
    #: Where ``restore --force`` moved the folder it replaced (kept, never deleted).
    replaced: Path | None = None
    #: The store written to (restore): ``sqlite+files``, ``postgres+files``, ``postgres+s3``.
    store: str = "sqlite+files"


# -- small file helpers ----------------------------------------------------------------------

def _mkdirs(root: Path, relative: str) -> Path:
    """Make the folders of ``relative`` under ``root`` (0700), fsyncing each new one."""
    target = root / relative
    folder = root
    for name in Path(relative).parts[:-1]:
        folder = folder / name
        if not folder.is_dir():
            folder.mkdir(mode=0o700)
            fsync_dir(folder.parent)
    return target


def _write(root: Path, relative: str, chunks: Iterable[bytes]) -> tuple[int, str]:
    """Write a new 0600 file, fsync it; (size, sha256) of what was written."""
    target = _mkdirs(root, relative)
    digest = hashlib.sha256()
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        for chunk in chunks:
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


def _read(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(COPY_SIZE):
            yield chunk


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in _read(path):
        digest.update(chunk)
    return digest.hexdigest()


def _fsync_tree(root: Path) -> None:
    for folder, _, _ in os.walk(root, topdown=False):
        fsync_dir(Path(folder))


def _staging(target: Path, what: str) -> Path:
    """A fresh 0700 folder beside ``target`` (same file system, so the rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = target.parent / f".{target.name}.{what}-{secrets.token_hex(4)}"
    stage.mkdir(mode=0o700)
    return stage


def _remove_tree(root: Path) -> None:
    if not root.exists():
        return
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files:
            (Path(folder) / name).unlink()
        for name in dirs:
            (Path(folder) / name).rmdir()
    root.rmdir()


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


# -- backup ----------------------------------------------------------------------------------

def backup(data_dir: Path, target: Path, *,
           after_snapshot: Callable[[], None] | None = None) -> Summary:
    """Back ``data_dir`` up into ``target`` (which must not exist, or be empty).

    ``after_snapshot`` runs between the database copy and the file copies (tests make
    a submission there, in the one window where the order matters).
    """
    if target.exists() and not _is_empty_dir(target):
        raise BackupError(f"{target} exists and is not empty: name a new folder")
    svc = Central(data_dir)
    stage = _staging(target, "backup")
    try:
        # In the log before the snapshot, so the backup records that it was made.
        svc.meta.append_audit(AuditEvent("cli", "backup_made", "backup"))
        source = _snapshot(svc, stage / DB_NAME)
        if after_snapshot is not None:
            after_snapshot()
        summary = Summary(path=target, service_key=str(svc.key.verify_key))
        files = _copy_blobs(svc, stage, summary.counts)
        key_size, key_sha = _write(stage, KEY_NAME, _read(data_dir / KEY_NAME))
        files[KEY_NAME] = (key_size, key_sha)
        # Hashed after the row edits above: this is the database the restore will open.
        files[DB_NAME] = ((stage / DB_NAME).stat().st_size, _sha256_file(stage / DB_NAME))
        os.chmod(stage / DB_NAME, 0o600)
        _check_rows(stage / DB_NAME, files)
        manifest = {
            "format": FORMAT,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            # Informative only (restore never reads it): the store the copy came from.
            "source": source,
            "service_key": summary.service_key,
            "counts": dict(sorted(summary.counts.items())),
            "files": [{"path": p, "size": s, "sha256": h}
                      for p, (s, h) in sorted(files.items())],
        }
        _write(stage, MANIFEST, [json.dumps(manifest, indent=1).encode("utf-8") + b"\n"])
        _fsync_tree(stage)
        if target.exists():
            target.rmdir()  # empty (checked above); rename will not replace a folder
        os.replace(stage, target)
        fsync_dir(target.parent)
    except BaseException:
        _remove_tree(stage)
        raise
    finally:
        svc.close()
    summary.files = len(files)  # the manifest aside
    summary.bytes = sum(s for s, _ in files.values())
    return summary


def _snapshot(svc: Central, target: Path) -> str:
    """The metadata at one point in time as a SQLite file at ``target``; the source's
    kind (``sqlite+files``, ``postgres+files`` or ``postgres+s3``)."""
    blobs = "files" if isinstance(svc.blobs, FileBlobStore) else "s3"
    if isinstance(svc.meta, SqliteMetaStore):
        svc.meta.backup_to(target)
        return f"sqlite+{blobs}"
    # Imported here: the default deployment never loads psycopg.
    from .storage.pg_meta import PostgresMetaStore
    from .storage.snapshot import postgres_to_sqlite

    if not isinstance(svc.meta, PostgresMetaStore):
        raise BackupError(f"central backup cannot read a {type(svc.meta).__name__}")
    postgres_to_sqlite(svc.meta.dsn, target)
    return f"postgres+{blobs}"


def _copy_blobs(svc: Central, stage: Path, counts: Counter[str]) -> dict[str, tuple[int, str]]:
    """Copy the blob of every row of the database copy; fix the copy's upload rows."""
    files: dict[str, tuple[int, str]] = {}
    conn = sqlite3.connect(stage / DB_NAME, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        parts = conn.execute("SELECT DISTINCT submission_id, sha256, size"
                             " FROM submission_parts ORDER BY 1, 2").fetchall()
        for row in parts:
            sid, sha, size = row["submission_id"], row["sha256"], row["size"]
            relative = f"parts/{sid}/{sha}"
            got = _copy_checked(stage, relative, lambda s=sid, h=sha: svc.blobs.read_part(s, h))
            if got != (size, sha):
                # A stored submission's bytes are missing or damaged on the live service:
                # no backup can hold them, and pretending otherwise would hide the loss.
                raise BackupError(f"submission {sid}: its part {sha[:12]}... is missing or"
                                  " damaged on the service itself; see its log"
                                  " (part_missing) and `central status`")
            files[relative] = got
            counts["parts"] += 1
        audio = conn.execute("SELECT story_id, sha256, size FROM public_audio"
                             " ORDER BY 1, 2").fetchall()
        for row in audio:
            story, sha, size = row["story_id"], row["sha256"], row["size"]
            relative = f"public/{story}/{sha}.ogg"
            got = _copy_checked(stage, relative,
                                lambda s=story, h=sha: svc.blobs.read_public_audio(s, h))
            if got != (size, sha):
                raise BackupError(f"story {story}: its audio is missing or damaged on the"
                                  " service itself")
            files[relative] = got
            counts["story_audio"] += 1
        for row in conn.execute("SELECT * FROM uploads ORDER BY id").fetchall():
            upload_id = row["id"]
            relative = f"uploads/{upload_id}"
            finished = (row["finished_at"] is not None and row["sha256"] is not None
                        and row["offset"] == row["length"])
            if finished:
                got = _copy_checked(stage, relative,
                                    lambda u=upload_id, n=row["length"]:
                                    svc.blobs.read_upload(u, 0, n))
                if got == (row["length"], row["sha256"]):
                    files[relative] = got
                    counts["uploads_finished"] += 1
                    continue
                # Swept since the snapshot (its submission holds the part) or damaged:
                # without its body the row means nothing; the kiosk uploads it again.
                (stage / relative).unlink(missing_ok=True)
                conn.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))
                counts["uploads_dropped"] += 1
                continue
            # Still growing: the body is left out, and the row starts again from 0.
            conn.execute("UPDATE uploads SET offset = 0, finished_at = NULL, sha256 = NULL"
                         " WHERE id = ?", (upload_id,))
            files[relative] = _write(stage, relative, [])
            counts["uploads_restarted"] += 1
    finally:
        conn.close()
    return files


def _copy_checked(stage: Path, relative: str,
                  source: Callable[[], Iterator[bytes]]) -> tuple[int, str] | None:
    """Copy one blob; (size, sha256) of the copy, or None if the blob is gone."""
    try:
        return _write(stage, relative, source())
    except (BlobMissing, FileNotFoundError):
        (stage / relative).unlink(missing_ok=True)
        return None


# -- checks shared by backup and restore -------------------------------------------------------

def _check_rows(db: Path, files: dict[str, tuple[int, str]]) -> Counter[str]:
    """Every row that names a blob has it in ``files`` with its size (and SHA-256);
    the database is intact and its audit chain unbroken. BackupError otherwise."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    counts: Counter[str] = Counter()
    try:
        try:
            ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        except sqlite3.DatabaseError:
            ok = "not a database"
        if ok != "ok":
            raise BackupError(f"{DB_NAME} is damaged ({ok})")
        missing: list[str] = []
        for row in conn.execute("SELECT submission_id, sha256, size FROM submission_parts"):
            path = f"parts/{row['submission_id']}/{row['sha256']}"
            if files.get(path) != (row["size"], row["sha256"]):
                missing.append(path)
            counts["parts"] += 1
        for row in conn.execute("SELECT story_id, sha256, size FROM public_audio"):
            path = f"public/{row['story_id']}/{row['sha256']}.ogg"
            if files.get(path) != (row["size"], row["sha256"]):
                missing.append(path)
        for row in conn.execute("SELECT id, offset, sha256, finished_at FROM uploads"):
            found = files.get(f"uploads/{row['id']}")
            if found is None or found[0] != row["offset"] or (
                    row["finished_at"] is not None and found[1] != row["sha256"]):
                missing.append(f"uploads/{row['id']}")
        if missing:
            raise BackupError(f"{len(missing)} rows of the database have no matching file"
                              f" in the backup (first: {missing[0]})")
        rows = [AuditRow(r["seq"], r["at"], r["actor"], r["action"], r["subject"],
                         r["prev_hash"], r["hash"])
                for r in conn.execute("SELECT * FROM audit ORDER BY seq")]
        head = conn.execute("SELECT value FROM meta WHERE key = 'audit_head'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{DB_NAME} cannot be read: {exc}") from None
    finally:
        conn.close()
    count, broken = first_broken(rows)
    last = f"{rows[-1].seq}:{rows[-1].hash}" if rows else None
    if broken is not None or (head[0] if head else None) != last:
        raise BackupError("the audit chain in the backup is broken")
    counts["audit_entries"] = count
    return counts


def read_manifest(source: Path) -> dict[str, tuple[int, str]]:
    """path -> (size, sha256) from the manifest, after checking its form and paths."""
    try:
        manifest: Any = json.loads((source / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{source} has no {MANIFEST}: not a backup, or an incomplete"
                          " one") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BackupError(f"{MANIFEST} is damaged (not JSON)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or not isinstance(manifest.get("files"), list):
        raise BackupError(f"{MANIFEST} is not a {FORMAT} manifest")
    files: dict[str, tuple[int, str]] = {}
    for entry in manifest["files"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) \
                or not _PATHS.fullmatch(entry["path"]) or entry["path"] in files \
                or not isinstance(entry.get("size"), int) \
                or not isinstance(entry.get("sha256"), str) \
                or not re.fullmatch(_HEX64, entry["sha256"]):
            raise BackupError(f"{MANIFEST} has a bad entry: {str(entry)[:120]}")
        files[entry["path"]] = (entry["size"], entry["sha256"])
    for needed in (DB_NAME, KEY_NAME):
        if needed not in files:
            raise BackupError(f"{MANIFEST} does not list {needed}")
    return files


def checked_manifest(source: Path) -> dict[str, tuple[int, str]]:
    """:func:`read_manifest`, and the backup holds exactly the files it lists."""
    files = read_manifest(source)
    present = _listed(source)
    if present - files.keys():
        extra = sorted(present - files.keys())
        raise BackupError(f"the backup holds {len(extra)} files its manifest does not list"
                          f" (first: {extra[0]}): refused")
    if files.keys() - present:
        gone = sorted(files.keys() - present)
        raise BackupError(f"the backup is incomplete: {len(gone)} files of its manifest are"
                          f" missing (first: {gone[0]})")
    return files


def _listed(source: Path) -> set[str]:
    out = set()
    for folder, _, names in os.walk(source):
        for name in names:
            out.add((Path(folder) / name).relative_to(source).as_posix())
    out.discard(MANIFEST)
    return out


# -- restore ---------------------------------------------------------------------------------

def restore(source: Path, target: Path, *, force: bool = False) -> Summary:
    """Check ``source`` (a backup) and make ``target`` a data directory from it.

    The store written to is the one ``target``'s configuration names (the environment
    or its central.conf): with CENTRAL_DATABASE_URL an empty PostgreSQL database and its
    blob store (restore_postgres.py); without, SQLite and files, as below.
    ``target`` must not exist or be empty; with ``force`` a non-empty one is renamed
    aside (``<target>.replaced-<time>``), never deleted.
    """
    if not source.is_dir():
        raise BackupError(f"{source} is not a folder")
    dsn = config_value(target, DATABASE_URL)
    if dsn is not None:
        # The target's configuration names PostgreSQL (and perhaps S3): restore there.
        from .restore_postgres import restore_postgres

        return restore_postgres(source, target, dsn, force=force)
    if config_value(target, S3_ENDPOINT) is not None or config_value(target, S3_BUCKET):
        # Restoring into files would leave a service that cannot start (open_blobs).
        raise BackupError(f"S3 blob storage needs PostgreSQL: set {DATABASE_URL} too")
    if target.exists() and not _is_empty_dir(target) and not force:
        raise BackupError(f"{target} is not empty: restore into a new folder, or add"
                          " --force to set the current one aside (it is kept, renamed)")
    files = checked_manifest(source)
    stage = _staging(target, "restore")
    try:
        copied: dict[str, tuple[int, str]] = {}
        for relative, expected in sorted(files.items()):
            # Hashed while copied: what lands in the target is what was checked.
            copied[relative] = _write(stage, relative, _read(source / relative))
            if copied[relative] != expected:
                raise BackupError(f"{relative} does not match the manifest (size or SHA-256):"
                                  " the backup is damaged or was changed; refused")
        # The rows against the bytes actually copied, not against the manifest's word.
        counts = _check_rows(stage / DB_NAME, copied)
        for sub in ("uploads", "parts", "public", TMP_DIR):
            (stage / sub).mkdir(mode=0o700, exist_ok=True)
        _fsync_tree(stage)
        aside = None
        if target.exists():
            if _is_empty_dir(target):
                target.rmdir()
            else:
                aside = target.with_name(f"{target.name}.replaced-{int(time.time())}")
                os.replace(target, aside)
        os.replace(stage, target)
        fsync_dir(target.parent)
    except BaseException:
        _remove_tree(stage)
        raise
    svc = Central(target)
    try:
        svc.meta.append_audit(AuditEvent("cli", "backup_restored", "backup"))
        summary = Summary(path=target, files=len(files), counts=counts,
                          bytes=sum(s for s, _ in files.values()),
                          service_key=str(svc.key.verify_key),
                          audit_entries=counts["audit_entries"] + 1, replaced=aside)
    finally:
        svc.close()
    return summary


__all__ = ["FORMAT", "MANIFEST", "BackupError", "Summary", "backup", "read_manifest",
           "restore"]
