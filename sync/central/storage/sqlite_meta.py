"""Metadata in one SQLite database, WAL with ``synchronous=FULL``; the schema is brought to
Alembic's head on open (:mod:`sync.central.schema`).

Each thread has its own connection (the API runs handlers in a thread pool); writes are
``BEGIN IMMEDIATE`` transactions, so the audit chain's "read the last hash, append" is
never raced by another writer, in this process or in a ``central`` command run beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..migrations import schema3
from ..schema import ensure_sqlite
from .audit_chain import GENESIS, entry_hash, utc_now_text
from .base import (
    Admin,
    AuditEvent,
    AuditRow,
    Conflict,
    Device,
    StaleCatalog,
    StoredCatalog,
    StoredPart,
    StoredSubmission,
    Upload,
    Vetter,
)

# The ``meta`` row the baseline writes (the version of record is Alembic's: ..schema).
SCHEMA_VERSION = schema3.SCHEMA_VERSION


def _device(row: sqlite3.Row | None) -> Device | None:
    if row is None:
        return None
    return Device(row["id"], row["name"], row["public_key"], row["enrolled_at"],
                  row["revoked_at"], row["last_heartbeat_at"], row["queue_depth"],
                  row["free_disk_bytes"], row["app_version"], row["last_error"])


def _upload(row: sqlite3.Row | None) -> Upload | None:
    if row is None:
        return None
    return Upload(row["id"], row["device_id"], row["submission_id"], row["part"],
                  row["length"], row["offset"], row["created_at"], row["expires_at"],
                  row["finished_at"], row["sha256"])


class SqliteMetaStore:
    """:class:`~.base.MetaStore` in one SQLite file."""

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.path = path
        self._local = threading.local()
        self._locks: set[str] = set()
        self._locks_guard = threading.Lock()
        self._all: list[sqlite3.Connection] = []
        if create:
            conn = self._conn()
            conn.execute("PRAGMA journal_mode=WAL")
            # To Alembic's head, as an older store was always brought up to date on open
            # here: a new store, one made before Alembic (adopted), or one behind.
            try:
                ensure_sqlite(conn, path)
            except BaseException:
                self.close()
                raise

    # -- connections and transactions ----------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            # An acknowledged upload or receipt must survive a power cut.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._locks_guard:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._conn().execute(sql, args).fetchone()
        return row

    def _audit(self, conn: sqlite3.Connection, event: AuditEvent | None) -> None:
        if event is None:
            return
        last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq = 1 if last is None else last["seq"] + 1
        prev = GENESIS if last is None else last["hash"]
        at = utc_now_text()
        digest = entry_hash(seq, at, event.actor, event.action, event.subject, prev)
        conn.execute("INSERT INTO audit(seq, at, actor, action, subject, prev_hash, hash)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (seq, at, event.actor, event.action, event.subject, prev, digest))
        # The head is kept apart too, so that dropping the newest entries is seen as well.
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('audit_head', ?)",
                     (f"{seq}:{digest}",))

    def close(self) -> None:
        with self._locks_guard:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()

    # -- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str, *, audit: AuditEvent | None = None) -> None:
        with self._tx() as conn:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))
            self._audit(conn, audit)

    # -- enrolment and devices -------------------------------------------------------------
    def add_enrol_code(self, code_hash: str, name: str | None, created_at: float,
                       expires_at: float, *, audit: AuditEvent | None = None) -> int:
        with self._tx() as conn:
            try:
                cur = conn.execute(
                    "INSERT INTO enrol_codes(code_hash, name, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?)", (code_hash, name, created_at, expires_at))
            except sqlite3.IntegrityError:
                raise Conflict("enrolment code exists") from None
            row_id = int(cur.lastrowid or 0)
            self._audit(conn, audit and AuditEvent(audit.actor, audit.action,
                                                   f"code-{row_id}"))
        return row_id

    def enrol_device(self, code_hash: str, now: float, device_id: str, public_key: str,
                     token_hash: str, *, audit: AuditEvent | None = None) -> bool:
        with self._tx() as conn:
            # One conditional UPDATE: the code is taken by exactly one request.
            taken = conn.execute(
                "UPDATE enrol_codes SET used_at = ?, device_id = ?"
                " WHERE code_hash = ? AND used_at IS NULL AND expires_at > ?"
                " RETURNING name", (now, device_id, code_hash, now)).fetchone()
            if taken is None:
                return False
            conn.execute("INSERT INTO devices(id, name, public_key, token_hash, enrolled_at)"
                         " VALUES (?, ?, ?, ?, ?)",
                         (device_id, taken["name"], public_key, token_hash, now))
            self._audit(conn, audit)
        return True

    def device_by_token(self, token_hash: str) -> Device | None:
        return _device(self._one("SELECT * FROM devices WHERE token_hash = ?", (token_hash,)))

    def get_device(self, device_id: str) -> Device | None:
        return _device(self._one("SELECT * FROM devices WHERE id = ?", (device_id,)))

    def list_devices(self) -> list[Device]:
        rows = self._conn().execute("SELECT * FROM devices ORDER BY enrolled_at, id")
        return [d for d in map(_device, rows) if d is not None]

    def revoke_device(self, device_id: str, now: float, *,
                      audit: AuditEvent | None = None) -> bool:
        with self._tx() as conn:
            cur = conn.execute("UPDATE devices SET revoked_at = COALESCE(revoked_at, ?)"
                               " WHERE id = ?", (now, device_id))
            if cur.rowcount == 0:
                return False
            self._audit(conn, audit)
        return True

    def record_heartbeat(self, device_id: str, now: float, queue_depth: int,
                         free_disk_bytes: int | None, app_version: str,
                         last_error: str | None) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE devices SET last_heartbeat_at = ?, queue_depth = ?,"
                         " free_disk_bytes = ?, app_version = ?, last_error = ? WHERE id = ?",
                         (now, queue_depth, free_disk_bytes, app_version, last_error,
                          device_id))

    # -- vetters -----------------------------------------------------------------------------
    def add_vetter(self, vetter_id: str, name: str, token_hash: str, now: float, *,
                   audit: AuditEvent | None = None) -> None:
        with self._tx() as conn:
            try:
                conn.execute("INSERT INTO vetters(id, name, token_hash, created_at)"
                             " VALUES (?, ?, ?, ?)", (vetter_id, name, token_hash, now))
            except sqlite3.IntegrityError:
                raise Conflict("vetter exists") from None
            self._audit(conn, audit)

    def vetter_by_token(self, token_hash: str) -> Vetter | None:
        row = self._one("SELECT * FROM vetters WHERE token_hash = ?", (token_hash,))
        if row is None:
            return None
        return Vetter(row["id"], row["name"], row["created_at"], row["revoked_at"])

    # -- administrators ---------------------------------------------------------------------
    def add_admin(self, admin_id: str, name: str, token_hash: str, now: float, *,
                  audit: AuditEvent | None = None) -> None:
        with self._tx() as conn:
            try:
                conn.execute("INSERT INTO admins(id, name, token_hash, created_at)"
                             " VALUES (?, ?, ?, ?)", (admin_id, name, token_hash, now))
            except sqlite3.IntegrityError:
                raise Conflict("administrator exists") from None
            self._audit(conn, audit)

    def admin_by_token(self, token_hash: str) -> Admin | None:
        row = self._one("SELECT * FROM admins WHERE token_hash = ?", (token_hash,))
        if row is None:
            return None
        return Admin(row["id"], row["name"], row["created_at"], row["revoked_at"])

    def revoke_admin(self, admin_id: str, now: float, *,
                     audit: AuditEvent | None = None) -> bool:
        with self._tx() as conn:
            cur = conn.execute("UPDATE admins SET revoked_at = COALESCE(revoked_at, ?)"
                               " WHERE id = ?", (now, admin_id))
            if cur.rowcount == 0:
                return False
            self._audit(conn, audit)
        return True

    # -- online backup (SQLite only: ``central backup``) --------------------------------------
    def backup_to(self, target: Path) -> None:
        """Write a consistent copy of the whole database to ``target`` (a new file).

        SQLite's online backup API in one step: it reads under one read transaction, so
        the copy is one point in time while ``serve`` keeps writing (a WAL reader does
        not block writers). The copy is switched to a rollback journal, so that it is
        one self-contained file; opening it as a store switches it back to WAL.
        """
        dest = sqlite3.connect(target, isolation_level=None)
        try:
            self._conn().backup(dest)
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()

    # -- uploads --------------------------------------------------------------------------
    def create_upload(self, upload: Upload, *, audit: AuditEvent | None = None) -> None:
        with self._tx() as conn:
            try:
                conn.execute(
                    "INSERT INTO uploads(id, device_id, submission_id, part, length, offset,"
                    " created_at, expires_at, finished_at, sha256)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (upload.id, upload.device_id, upload.submission_id, upload.part,
                     upload.length, upload.offset, upload.created_at, upload.expires_at,
                     upload.finished_at, upload.sha256))
            except sqlite3.IntegrityError:
                raise Conflict("upload exists") from None
            self._audit(conn, audit)

    def get_upload(self, upload_id: str) -> Upload | None:
        return _upload(self._one("SELECT * FROM uploads WHERE id = ?", (upload_id,)))

    def list_uploads(self) -> list[Upload]:
        rows = self._conn().execute("SELECT * FROM uploads ORDER BY created_at, id")
        return [u for u in map(_upload, rows) if u is not None]

    def set_upload_offset(self, upload_id: str, offset: int) -> None:
        with self._tx() as conn:
            # Never backwards (a late writer is ignored); reset_upload is the one way back.
            conn.execute("UPDATE uploads SET offset = ? WHERE id = ? AND offset <= ?",
                         (offset, upload_id, offset))

    def reset_upload(self, upload_id: str) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE uploads SET offset = 0, finished_at = NULL, sha256 = NULL"
                         " WHERE id = ?", (upload_id,))

    def finish_upload(self, upload_id: str, sha256: str, now: float, *,
                      audit: AuditEvent | None = None) -> None:
        with self._tx() as conn:
            conn.execute("UPDATE uploads SET finished_at = ?, sha256 = ? WHERE id = ?",
                         (now, sha256, upload_id))
            self._audit(conn, audit)

    def delete_upload(self, upload_id: str, *, audit: AuditEvent | None = None) -> bool:
        with self._tx() as conn:
            cur = conn.execute("DELETE FROM uploads WHERE id = ?", (upload_id,))
            if cur.rowcount == 0:
                return False
            self._audit(conn, audit)
        return True

    def finished_upload_for(self, device_id: str, submission_id: str, part: str, size: int,
                            sha256: str) -> Upload | None:
        return _upload(self._one(
            "SELECT * FROM uploads WHERE device_id = ? AND submission_id = ? AND part = ?"
            " AND length = ? AND offset = length AND sha256 = ? AND finished_at IS NOT NULL"
            " ORDER BY finished_at DESC LIMIT 1",
            (device_id, submission_id, part, size, sha256)))

    def whole_unfinished_uploads(self, device_id: str, submission_id: str, part: str,
                                 size: int) -> list[Upload]:
        rows = self._conn().execute(
            "SELECT * FROM uploads WHERE device_id = ? AND submission_id = ? AND part = ?"
            " AND length = ? AND offset = length AND finished_at IS NULL ORDER BY created_at",
            (device_id, submission_id, part, size))
        return [u for u in map(_upload, rows) if u is not None]

    def try_lock_upload(self, upload_id: str) -> bool:
        with self._locks_guard:
            if upload_id in self._locks:
                return False
            self._locks.add(upload_id)
            return True

    def unlock_upload(self, upload_id: str) -> None:
        with self._locks_guard:
            self._locks.discard(upload_id)

    # -- submissions -----------------------------------------------------------------------
    def insert_submission(self, submission: StoredSubmission, *,
                          audit: AuditEvent | None = None) -> None:
        with self._tx() as conn:
            try:
                # No "SELECT first": the primary key decides between concurrent inserts.
                conn.execute(
                    "INSERT INTO submissions(id, device_id, index_text, index_sha256,"
                    " index_signature, state, received_at, withdrawal_key, reason, story_id,"
                    " state_changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (submission.id, submission.device_id, submission.index,
                     _sha256(submission.index), submission.index_signature, submission.state,
                     submission.received_at, submission.withdrawal_key, submission.reason,
                     submission.story_id, submission.state_changed_at))
            except sqlite3.IntegrityError:
                raise Conflict("a submission with this id exists") from None
            conn.executemany(
                "INSERT INTO submission_parts(submission_id, name, size, sha256)"
                " VALUES (?, ?, ?, ?)",
                [(submission.id, p.name, p.size, p.sha256) for p in submission.parts])
            conn.execute("INSERT INTO receipts(submission_id, receipt, signature)"
                         " VALUES (?, ?, ?)",
                         (submission.id, submission.receipt, submission.receipt_signature))
            self._audit(conn, audit)

    def _submission(self, row: sqlite3.Row) -> StoredSubmission:
        parts = tuple(StoredPart(p["name"], p["size"], p["sha256"]) for p in self._conn().execute(
            "SELECT name, size, sha256 FROM submission_parts WHERE submission_id = ?"
            " ORDER BY name", (row["id"],)))
        receipt = self._one("SELECT receipt, signature FROM receipts WHERE submission_id = ?",
                            (row["id"],))
        return StoredSubmission(
            row["id"], row["device_id"], bytes(row["index_text"]), row["index_signature"],
            row["state"], row["received_at"], bytes(receipt["receipt"]) if receipt else b"",
            receipt["signature"] if receipt else "", parts, row["withdrawal_key"],
            row["reason"], row["story_id"], row["state_changed_at"])

    def get_submission(self, submission_id: str) -> StoredSubmission | None:
        row = self._one("SELECT * FROM submissions WHERE id = ?", (submission_id,))
        return None if row is None else self._submission(row)

    def list_submissions(self, state: str | None = None) -> list[StoredSubmission]:
        if state is None:
            rows = self._conn().execute("SELECT * FROM submissions ORDER BY received_at, id")
        else:
            rows = self._conn().execute("SELECT * FROM submissions WHERE state = ?"
                                        " ORDER BY received_at, id", (state,))
        return [self._submission(r) for r in rows.fetchall()]

    def set_submission_state(self, submission_id: str, expect: str, state: str,
                             reason: str | None, story_id: str | None, now: float, *,
                             audit: AuditEvent | None = None) -> bool:
        with self._tx() as conn:
            try:
                cur = conn.execute(
                    "UPDATE submissions SET state = ?, reason = ?, story_id = ?,"
                    " state_changed_at = ? WHERE id = ? AND state = ?",
                    (state, reason, story_id, now, submission_id, expect))
            except sqlite3.IntegrityError:
                raise Conflict("another submission has this story id") from None
            if cur.rowcount != 1:
                return False
            self._audit(conn, audit)
        return True

    def withdraw(self, withdrawal_key: str, now: float, *, actor: str) -> tuple[int, list[str]]:
        with self._tx() as conn:
            matched = conn.execute("SELECT COUNT(*) FROM submissions WHERE withdrawal_key = ?",
                                   (withdrawal_key,)).fetchone()[0]
            changed = [r["id"] for r in conn.execute(
                "UPDATE submissions SET state = 'withdrawn', state_changed_at = ?"
                " WHERE withdrawal_key = ? AND state != 'withdrawn' RETURNING id",
                (now, withdrawal_key)).fetchall()]
            for submission_id in sorted(changed):
                self._audit(conn, AuditEvent(actor, "submission_withdrawn", submission_id))
        return int(matched), sorted(changed)

    def withdrawn_story_ids(self, story_ids: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(story_ids))
        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            found.update(r["story_id"] for r in self._conn().execute(
                f"SELECT story_id FROM submissions WHERE state = 'withdrawn'"
                f" AND story_id IN ({marks})", chunk))
        return found

    # -- public audio and catalogs ------------------------------------------------------------
    def add_public_audio(self, story_id: str, sha256: str, size: int, now: float, *,
                         audit: AuditEvent | None = None) -> bool:
        with self._tx() as conn:
            cur = conn.execute("INSERT OR IGNORE INTO public_audio(story_id, sha256, size,"
                               " created_at) VALUES (?, ?, ?, ?)", (story_id, sha256, size, now))
            if cur.rowcount != 1:
                return False
            self._audit(conn, audit)
        return True

    def public_audio_size(self, story_id: str, sha256: str) -> int | None:
        row = self._one("SELECT size FROM public_audio WHERE story_id = ? AND sha256 = ?",
                        (story_id, sha256))
        return None if row is None else int(row["size"])

    def latest_public_audio(self, story_id: str) -> tuple[str, int] | None:
        row = self._one("SELECT sha256, size FROM public_audio WHERE story_id = ?"
                        " ORDER BY created_at DESC, rowid DESC LIMIT 1", (story_id,))
        return None if row is None else (str(row["sha256"]), int(row["size"]))

    def put_catalog(self, catalog: StoredCatalog, *, audit: AuditEvent | None = None) -> None:
        with self._tx() as conn:
            newest = conn.execute("SELECT MAX(version) FROM catalogs").fetchone()[0]
            if newest is not None and catalog.version <= newest:
                raise StaleCatalog(f"version {catalog.version} is not newer than {newest}")
            try:
                conn.execute("INSERT INTO catalogs(version, data, signature, sha256,"
                             " created_at) VALUES (?, ?, ?, ?, ?)",
                             (catalog.version, catalog.data, catalog.signature, catalog.sha256,
                              catalog.created_at))
            except sqlite3.IntegrityError:
                raise StaleCatalog(f"version {catalog.version} exists") from None
            self._audit(conn, audit)

    def latest_catalog(self, *, with_data: bool = True) -> StoredCatalog | None:
        columns = "version, data, signature, sha256, created_at" if with_data \
            else "version, signature, sha256, created_at"
        row = self._one(f"SELECT {columns} FROM catalogs ORDER BY version DESC LIMIT 1")
        if row is None:
            return None
        return StoredCatalog(int(row["version"]), bytes(row["data"]) if with_data else b"",
                             str(row["signature"]), str(row["sha256"]), float(row["created_at"]))

    # -- audit ----------------------------------------------------------------------------------
    def append_audit(self, event: AuditEvent) -> None:
        with self._tx() as conn:
            self._audit(conn, event)

    def audit_rows(self) -> Iterator[AuditRow]:
        for row in self._conn().execute("SELECT * FROM audit ORDER BY seq").fetchall():
            yield AuditRow(row["seq"], row["at"], row["actor"], row["action"], row["subject"],
                           row["prev_hash"], row["hash"])


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = ["SCHEMA_VERSION", "SqliteMetaStore"]
