"""Metadata in PostgreSQL (psycopg 3 and a connection pool): the scale-out MetaStore.

The same tables, columns and constraints as :mod:`.sqlite_meta` (one schema, one
``schema_version``), so that several ``central serve`` instances can share one database:

* Every write is one transaction, its audit row included. Connections run in autocommit
  and each write opens ``conn.transaction()`` explicitly, so a read never leaves a
  session "idle in transaction".
* Transactions run at READ COMMITTED (PostgreSQL's default), on purpose: the audit append
  takes a lock, then reads the chain head; at READ COMMITTED that read takes a fresh
  snapshot after the lock is granted and so sees the previous writer's committed head.
  (At REPEATABLE READ the snapshot could predate the lock and fork the chain.)
* Compare-and-set updates (an enrolment code, a submission's state) rely on PostgreSQL
  re-checking the WHERE clause on the newest row version after waiting for a concurrent
  writer, so exactly one of two racing updates matches.
* Per-upload locks are session-level advisory locks held on a dedicated connection, so
  that any instance can continue any upload and a dead instance's locks end with its
  sessions (the database releases them, no timeout guesses).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import psycopg
from psycopg import errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from ..schema import check_postgres, ensure_postgres
from .audit_chain import GENESIS, entry_hash, utc_now_text
from .base import (
    Admin,
    AuditEvent,
    AuditRow,
    Conflict,
    Device,
    StaleCatalog,
    StorageUnavailable,
    StoredCatalog,
    StoredPart,
    StoredSubmission,
    Upload,
    Vetter,
)

# One schema for both stores: the version number is SQLite's, not a second counter.
from .sqlite_meta import SCHEMA_VERSION

log = logging.getLogger("central")

Row = dict[str, Any]

# Advisory lock keys. PostgreSQL keeps the one-bigint and the two-int4 key spaces apart,
# so these two-int4 keys can never collide with an upload's bigint key.
_LOCK_CLASS = 0x49445231  # "IDR1"
_AUDIT_LOCK = (_LOCK_CLASS, 1)
# (_LOCK_CLASS, 2) is the schema lock: sync/central/schema.py's SCHEMA_LOCK.

# The DDL is Alembic's (sync/central/migrations/schema3.py and later revisions).


def upload_lock_key(upload_id: str) -> int:
    """The upload's advisory lock key: the first 8 bytes of SHA-256(id), signed.

    Two ids sharing a key (odds about n^2 / 2^65 for n uploads in flight) only means
    that one upload looks locked while the other is worked on: a false "locked" (the
    client retries), never two holders of one upload's lock.
    """
    return int.from_bytes(hashlib.sha256(upload_id.encode()).digest()[:8], "big",
                          signed=True)


def _configure(conn: psycopg.Connection[Any]) -> None:
    # An acknowledged write must survive a power cut whatever the server's default or a
    # role's setting says: a commit returns only after its WAL is flushed.
    conn.execute("SET synchronous_commit TO on")


def _device(row: Row | None) -> Device | None:
    if row is None:
        return None
    return Device(row["id"], row["name"], row["public_key"], row["enrolled_at"],
                  row["revoked_at"], row["last_heartbeat_at"], row["queue_depth"],
                  row["free_disk_bytes"], row["app_version"], row["last_error"])


def _upload(row: Row | None) -> Upload | None:
    if row is None:
        return None
    return Upload(row["id"], row["device_id"], row["submission_id"], row["part"],
                  row["length"], row["offset"], row["created_at"], row["expires_at"],
                  row["finished_at"], row["sha256"])


class PostgresMetaStore:
    """:class:`~.base.MetaStore` in one PostgreSQL database, shared by any number of
    service instances."""

    def __init__(self, dsn: str, *, create: bool = False, pool_size: int = 8,
                 timeout: float = 30.0) -> None:
        self.dsn = dsn
        # check_connection costs an empty round trip per checkout; it buys clean
        # recovery after PostgreSQL restarts (a dead pooled connection is replaced
        # instead of failing the request that drew it).
        self._pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            dsn, min_size=1, max_size=pool_size, timeout=timeout, open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
            configure=_configure, check=ConnectionPool.check_connection,
            name="central-meta")
        # Upload locks live in ONE session of their own (see try_lock_upload): any number
        # of uploads can be locked at once with a single connection per process, and
        # the queries' pool is never drawn on by locks.
        self._lock_session: psycopg.Connection[Row] | None = None
        self._lock_session_guard = threading.Lock()  # one query at a time on it
        self._timeout = timeout
        self._held: set[str] = set()  # upload ids this process holds (under the guard)
        self._held_guard = threading.Lock()
        # One plain connection first: a wrong URL or a missing database fails at once
        # with libpq's reason, where the pool would retry quietly until its timeout.
        psycopg.connect(dsn, connect_timeout=max(2, int(timeout))).close()
        self._pool.open(wait=True, timeout=timeout)
        try:
            with self._pool.connection() as conn:
                if create:
                    # `central init`: to Alembic's head (under the schema lock).
                    ensure_postgres(conn, dsn)
                else:
                    # Never migrated behind the operator's back: a schema that is not
                    # the head is refused ("run `central migrate`").
                    check_postgres(conn)
        except BaseException:
            self.close()
            raise

    # -- connections and transactions ----------------------------------------------------
    @contextlib.contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor[Row]]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> Row | None:
        with self._pool.connection() as conn:
            return conn.execute(sql, args).fetchone()

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[Row]:
        with self._pool.connection() as conn:
            return conn.execute(sql, args).fetchall()

    def _audit(self, cur: psycopg.Cursor[Row], event: AuditEvent | None) -> None:
        if event is None:
            return
        # The chain must stay linear under concurrent writers on any instance: a
        # transaction-level advisory lock serializes "read the head, append" until
        # commit. Chosen over SELECT ... FOR UPDATE on the head row because an empty
        # chain has no row to lock (two first writers would both take seq 1). Every
        # write takes it last, after its own row changes, so it never waits on a row
        # lock while holding this one: no deadlock cycle through it.
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", _AUDIT_LOCK)
        last = cur.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq = 1 if last is None else int(last["seq"]) + 1
        prev = GENESIS if last is None else str(last["hash"])
        at = utc_now_text()
        digest = entry_hash(seq, at, event.actor, event.action, event.subject, prev)
        cur.execute("INSERT INTO audit(seq, at, actor, action, subject, prev_hash, hash)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (seq, at, event.actor, event.action, event.subject, prev, digest))
        # The head is kept apart too (as on SQLite): dropping the newest entries shows.
        cur.execute("INSERT INTO meta(key, value) VALUES ('audit_head', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (f"{seq}:{digest}",))

    def close(self) -> None:
        with self._held_guard:
            self._held = set()
        with self._lock_session_guard:
            if self._lock_session is not None:
                # Closing the session releases its advisory locks.
                with contextlib.suppress(psycopg.Error):
                    self._lock_session.close()
                self._lock_session = None
        self._pool.close()

    # -- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = %s", (key,))
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str, *, audit: AuditEvent | None = None) -> None:
        with self._tx() as cur:
            cur.execute("INSERT INTO meta(key, value) VALUES (%s, %s)"
                        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        (key, value))
            self._audit(cur, audit)

    # -- enrolment and devices -------------------------------------------------------------
    def add_enrol_code(self, code_hash: str, name: str | None, created_at: float,
                       expires_at: float, *, audit: AuditEvent | None = None) -> int:
        with self._tx() as cur:
            try:
                row = cur.execute(
                    "INSERT INTO enrol_codes(code_hash, name, created_at, expires_at)"
                    " VALUES (%s, %s, %s, %s) RETURNING id",
                    (code_hash, name, created_at, expires_at)).fetchone()
            except errors.UniqueViolation:
                raise Conflict("enrolment code exists") from None
            assert row is not None
            row_id = int(row["id"])
            self._audit(cur, audit and AuditEvent(audit.actor, audit.action,
                                                  f"code-{row_id}"))
        return row_id

    def enrol_device(self, code_hash: str, now: float, device_id: str, public_key: str,
                     token_hash: str, *, audit: AuditEvent | None = None) -> bool:
        with self._tx() as cur:
            # One conditional UPDATE: a racing second request waits for the first, then
            # finds used_at set and matches nothing.
            taken = cur.execute(
                "UPDATE enrol_codes SET used_at = %s, device_id = %s"
                " WHERE code_hash = %s AND used_at IS NULL AND expires_at > %s"
                " RETURNING name", (now, device_id, code_hash, now)).fetchone()
            if taken is None:
                return False
            try:
                cur.execute("INSERT INTO devices(id, name, public_key, token_hash,"
                            " enrolled_at) VALUES (%s, %s, %s, %s, %s)",
                            (device_id, taken["name"], public_key, token_hash, now))
            except errors.UniqueViolation:
                raise Conflict("device exists") from None
            self._audit(cur, audit)
        return True

    def device_by_token(self, token_hash: str) -> Device | None:
        return _device(self._one("SELECT * FROM devices WHERE token_hash = %s",
                                 (token_hash,)))

    def get_device(self, device_id: str) -> Device | None:
        return _device(self._one("SELECT * FROM devices WHERE id = %s", (device_id,)))

    def list_devices(self) -> list[Device]:
        rows = self._all("SELECT * FROM devices ORDER BY enrolled_at, id")
        return [d for d in map(_device, rows) if d is not None]

    def revoke_device(self, device_id: str, now: float, *,
                      audit: AuditEvent | None = None) -> bool:
        with self._tx() as cur:
            cur.execute("UPDATE devices SET revoked_at = COALESCE(revoked_at, %s)"
                        " WHERE id = %s", (now, device_id))
            if cur.rowcount == 0:
                return False
            self._audit(cur, audit)
        return True

    def record_heartbeat(self, device_id: str, now: float, queue_depth: int,
                         free_disk_bytes: int | None, app_version: str,
                         last_error: str | None) -> None:
        with self._tx() as cur:
            cur.execute("UPDATE devices SET last_heartbeat_at = %s, queue_depth = %s,"
                        " free_disk_bytes = %s, app_version = %s, last_error = %s"
                        " WHERE id = %s",
                        (now, queue_depth, free_disk_bytes, app_version, last_error,
                         device_id))

    # -- vetters -----------------------------------------------------------------------------
    def add_vetter(self, vetter_id: str, name: str, token_hash: str, now: float, *,
                   audit: AuditEvent | None = None) -> None:
        with self._tx() as cur:
            try:
                cur.execute("INSERT INTO vetters(id, name, token_hash, created_at)"
                            " VALUES (%s, %s, %s, %s)", (vetter_id, name, token_hash, now))
            except errors.UniqueViolation:
                raise Conflict("vetter exists") from None
            self._audit(cur, audit)

    def vetter_by_token(self, token_hash: str) -> Vetter | None:
        row = self._one("SELECT * FROM vetters WHERE token_hash = %s", (token_hash,))
        if row is None:
            return None
        return Vetter(row["id"], row["name"], row["created_at"], row["revoked_at"])

    # -- administrators ---------------------------------------------------------------------
    def add_admin(self, admin_id: str, name: str, token_hash: str, now: float, *,
                  audit: AuditEvent | None = None) -> None:
        with self._tx() as cur:
            try:
                cur.execute("INSERT INTO admins(id, name, token_hash, created_at)"
                            " VALUES (%s, %s, %s, %s)", (admin_id, name, token_hash, now))
            except errors.UniqueViolation:
                raise Conflict("administrator exists") from None
            self._audit(cur, audit)

    def admin_by_token(self, token_hash: str) -> Admin | None:
        row = self._one("SELECT * FROM admins WHERE token_hash = %s", (token_hash,))
        if row is None:
            return None
        return Admin(row["id"], row["name"], row["created_at"], row["revoked_at"])

    def revoke_admin(self, admin_id: str, now: float, *,
                     audit: AuditEvent | None = None) -> bool:
        with self._tx() as cur:
            cur.execute("UPDATE admins SET revoked_at = COALESCE(revoked_at, %s)"
                        " WHERE id = %s", (now, admin_id))
            if cur.rowcount == 0:
                return False
            self._audit(cur, audit)
        return True

    # -- uploads --------------------------------------------------------------------------
    def create_upload(self, upload: Upload, *, audit: AuditEvent | None = None) -> None:
        with self._tx() as cur:
            try:
                cur.execute(
                    'INSERT INTO uploads(id, device_id, submission_id, part, length, "offset",'
                    " created_at, expires_at, finished_at, sha256)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (upload.id, upload.device_id, upload.submission_id, upload.part,
                     upload.length, upload.offset, upload.created_at, upload.expires_at,
                     upload.finished_at, upload.sha256))
            except errors.UniqueViolation:
                raise Conflict("upload exists") from None
            self._audit(cur, audit)

    def get_upload(self, upload_id: str) -> Upload | None:
        return _upload(self._one("SELECT * FROM uploads WHERE id = %s", (upload_id,)))

    def list_uploads(self) -> list[Upload]:
        rows = self._all("SELECT * FROM uploads ORDER BY created_at, id")
        return [u for u in map(_upload, rows) if u is not None]

    def set_upload_offset(self, upload_id: str, offset: int) -> None:
        with self._tx() as cur:
            # Never backwards (issue 14): a late writer that lost its lock (say, its
            # session ended under it) must not undo bytes another instance recorded.
            cur.execute('UPDATE uploads SET "offset" = %s WHERE id = %s AND "offset" <= %s',
                        (offset, upload_id, offset))
            if cur.rowcount == 0:
                log.warning("upload_offset_not_moved upload %s", upload_id)

    def reset_upload(self, upload_id: str) -> None:
        with self._tx() as cur:
            cur.execute('UPDATE uploads SET "offset" = 0, finished_at = NULL, sha256 = NULL'
                        " WHERE id = %s", (upload_id,))

    def finish_upload(self, upload_id: str, sha256: str, now: float, *,
                      audit: AuditEvent | None = None) -> None:
        with self._tx() as cur:
            cur.execute("UPDATE uploads SET finished_at = %s, sha256 = %s WHERE id = %s",
                        (now, sha256, upload_id))
            self._audit(cur, audit)

    def delete_upload(self, upload_id: str, *, audit: AuditEvent | None = None) -> bool:
        with self._tx() as cur:
            cur.execute("DELETE FROM uploads WHERE id = %s", (upload_id,))
            if cur.rowcount == 0:
                return False
            self._audit(cur, audit)
        return True

    def finished_upload_for(self, device_id: str, submission_id: str, part: str, size: int,
                            sha256: str) -> Upload | None:
        return _upload(self._one(
            "SELECT * FROM uploads WHERE device_id = %s AND submission_id = %s AND part = %s"
            ' AND length = %s AND "offset" = length AND sha256 = %s'
            " AND finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1",
            (device_id, submission_id, part, size, sha256)))

    def whole_unfinished_uploads(self, device_id: str, submission_id: str, part: str,
                                 size: int) -> list[Upload]:
        rows = self._all(
            "SELECT * FROM uploads WHERE device_id = %s AND submission_id = %s AND part = %s"
            ' AND length = %s AND "offset" = length AND finished_at IS NULL'
            " ORDER BY created_at", (device_id, submission_id, part, size))
        return [u for u in map(_upload, rows) if u is not None]

    def try_lock_upload(self, upload_id: str) -> bool:
        """Take the upload's session-level advisory lock without waiting.

        Every lock of this process lives in one session (connection) kept open for
        them: if this process dies, PostgreSQL ends the session and releases its locks
        at once, with no timeout guess. Another process asking for a held upload gets
        False. Advisory locks are re-entrant within a session, so this process keeps
        the set of ids it holds and refuses those itself; that also covers a
        PostgreSQL restart, after which the server has forgotten a lock whose holder
        here may still be writing.
        """
        with self._held_guard:
            if upload_id in self._held:
                return False
            self._held.add(upload_id)  # reserved; released below unless granted
        granted = False
        try:
            granted = bool(self._on_lock_session(
                "SELECT pg_try_advisory_lock(%s) AS ok", upload_id))
        finally:
            if not granted:
                with self._held_guard:
                    self._held.discard(upload_id)
        return granted

    def unlock_upload(self, upload_id: str) -> None:
        with self._held_guard:
            if upload_id not in self._held:
                return
        try:
            # After a restart the new session does not hold it: PostgreSQL answers
            # false (with a warning), which is right.
            self._on_lock_session("SELECT pg_advisory_unlock(%s) AS ok", upload_id)
        except StorageUnavailable:
            pass  # the session is gone, and its locks with it
        finally:
            with self._held_guard:
                self._held.discard(upload_id)

    def _on_lock_session(self, query: str, upload_id: str) -> bool:
        """Run a one-row advisory-lock query on the lock session, (re)connecting it
        first if needed; StorageUnavailable if the database cannot be reached."""
        if not self._lock_session_guard.acquire(timeout=self._timeout):
            raise StorageUnavailable("the lock session is stuck")
        try:
            try:
                if self._lock_session is None or self._lock_session.closed:
                    self._lock_session = psycopg.connect(
                        self.dsn, autocommit=True, row_factory=dict_row,
                        connect_timeout=max(2, int(self._timeout)))
                row = self._lock_session.execute(query,
                                                 (upload_lock_key(upload_id),)).fetchone()
            except (psycopg.OperationalError, psycopg.InterfaceError):
                if self._lock_session is not None:
                    with contextlib.suppress(psycopg.Error):
                        self._lock_session.close()
                self._lock_session = None  # the next call connects again
                raise StorageUnavailable("the database cannot be reached") from None
            return bool(row is not None and row["ok"])
        finally:
            self._lock_session_guard.release()

    # -- submissions -----------------------------------------------------------------------
    def insert_submission(self, submission: StoredSubmission, *,
                          audit: AuditEvent | None = None) -> None:
        with self._tx() as cur:
            try:
                # No "SELECT first": the primary key decides between concurrent inserts
                # (the loser waits for the winner's commit, then gets UniqueViolation).
                cur.execute(
                    "INSERT INTO submissions(id, device_id, index_text, index_sha256,"
                    " index_signature, state, received_at, withdrawal_key, reason, story_id,"
                    " state_changed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (submission.id, submission.device_id, submission.index,
                     _sha256(submission.index), submission.index_signature, submission.state,
                     submission.received_at, submission.withdrawal_key, submission.reason,
                     submission.story_id, submission.state_changed_at))
            except errors.UniqueViolation as exc:
                what = "story id" if exc.diag.constraint_name == "submissions_story" else "id"
                raise Conflict(f"a submission with this {what} exists") from None
            cur.executemany(
                "INSERT INTO submission_parts(submission_id, name, size, sha256)"
                " VALUES (%s, %s, %s, %s)",
                [(submission.id, p.name, p.size, p.sha256) for p in submission.parts])
            cur.execute("INSERT INTO receipts(submission_id, receipt, signature)"
                        " VALUES (%s, %s, %s)",
                        (submission.id, submission.receipt, submission.receipt_signature))
            self._audit(cur, audit)

    def _submissions(self, conn: psycopg.Connection[Row],
                     rows: list[Row]) -> list[StoredSubmission]:
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        # Two queries for the whole list rather than two per submission: the vetting
        # queue lists every submission, and each round trip costs more than on SQLite.
        parts: dict[str, list[StoredPart]] = {i: [] for i in ids}
        for p in conn.execute("SELECT submission_id, name, size, sha256 FROM submission_parts"
                              " WHERE submission_id = ANY(%s) ORDER BY submission_id, name",
                              (ids,)):
            parts[p["submission_id"]].append(StoredPart(p["name"], p["size"], p["sha256"]))
        receipts = {r["submission_id"]: r for r in conn.execute(
            "SELECT submission_id, receipt, signature FROM receipts"
            " WHERE submission_id = ANY(%s)", (ids,))}
        out = []
        for row in rows:
            receipt = receipts.get(row["id"])
            out.append(StoredSubmission(
                row["id"], row["device_id"], bytes(row["index_text"]),
                row["index_signature"], row["state"], row["received_at"],
                bytes(receipt["receipt"]) if receipt else b"",
                receipt["signature"] if receipt else "", tuple(parts[row["id"]]),
                row["withdrawal_key"], row["reason"], row["story_id"],
                row["state_changed_at"]))
        return out

    def get_submission(self, submission_id: str) -> StoredSubmission | None:
        with self._pool.connection() as conn, conn.transaction():
            rows = conn.execute("SELECT * FROM submissions WHERE id = %s",
                                (submission_id,)).fetchall()
            found = self._submissions(conn, rows)
        return found[0] if found else None

    def list_submissions(self, state: str | None = None) -> list[StoredSubmission]:
        # COLLATE "C": the same byte order as SQLite's, whatever the database's locale.
        order = ' ORDER BY received_at COLLATE "C", id COLLATE "C"'
        with self._pool.connection() as conn, conn.transaction():
            if state is None:
                rows = conn.execute("SELECT * FROM submissions" + order).fetchall()
            else:
                rows = conn.execute("SELECT * FROM submissions WHERE state = %s" + order,
                                    (state,)).fetchall()
            return self._submissions(conn, rows)

    def set_submission_state(self, submission_id: str, expect: str, state: str,
                             reason: str | None, story_id: str | None, now: float, *,
                             audit: AuditEvent | None = None) -> bool:
        with self._tx() as cur:
            try:
                cur.execute(
                    "UPDATE submissions SET state = %s, reason = %s, story_id = %s,"
                    " state_changed_at = %s WHERE id = %s AND state = %s",
                    (state, reason, story_id, now, submission_id, expect))
            except errors.UniqueViolation:
                raise Conflict("another submission has this story id") from None
            if cur.rowcount != 1:
                return False
            self._audit(cur, audit)
        return True

    def withdraw(self, withdrawal_key: str, now: float, *, actor: str) -> tuple[int, list[str]]:
        with self._tx() as cur:
            counted = cur.execute("SELECT COUNT(*) AS n FROM submissions"
                                  " WHERE withdrawal_key = %s", (withdrawal_key,)).fetchone()
            changed = [r["id"] for r in cur.execute(
                "UPDATE submissions SET state = 'withdrawn', state_changed_at = %s"
                " WHERE withdrawal_key = %s AND state != 'withdrawn' RETURNING id",
                (now, withdrawal_key)).fetchall()]
            for submission_id in sorted(changed):
                self._audit(cur, AuditEvent(actor, "submission_withdrawn", submission_id))
        return int(counted["n"] if counted else 0), sorted(changed)

    def withdrawn_story_ids(self, story_ids: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(story_ids))
        if not wanted:
            return set()
        return {r["story_id"] for r in self._all(
            "SELECT story_id FROM submissions WHERE state = 'withdrawn'"
            " AND story_id = ANY(%s)", (wanted,))}

    # -- public audio and catalogs ------------------------------------------------------------
    def add_public_audio(self, story_id: str, sha256: str, size: int, now: float, *,
                         audit: AuditEvent | None = None) -> bool:
        with self._tx() as cur:
            cur.execute("INSERT INTO public_audio(story_id, sha256, size, created_at)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        (story_id, sha256, size, now))
            if cur.rowcount != 1:
                return False
            self._audit(cur, audit)
        return True

    def public_audio_size(self, story_id: str, sha256: str) -> int | None:
        row = self._one("SELECT size FROM public_audio WHERE story_id = %s AND sha256 = %s",
                        (story_id, sha256))
        return None if row is None else int(row["size"])

    def latest_public_audio(self, story_id: str) -> tuple[str, int] | None:
        row = self._one("SELECT sha256, size FROM public_audio WHERE story_id = %s"
                        " ORDER BY created_at DESC, added DESC LIMIT 1", (story_id,))
        return None if row is None else (str(row["sha256"]), int(row["size"]))

    def put_catalog(self, catalog: StoredCatalog, *, audit: AuditEvent | None = None) -> None:
        with self._tx() as cur:
            # Writers queue here (readers do not): without it two writers could both
            # read the same MAX and store versions 7 and then 6, both "newest".
            cur.execute("LOCK TABLE catalogs IN EXCLUSIVE MODE")
            newest = cur.execute("SELECT MAX(version) AS v FROM catalogs").fetchone()
            top = None if newest is None else newest["v"]
            if top is not None and catalog.version <= top:
                raise StaleCatalog(f"version {catalog.version} is not newer than {top}")
            try:
                cur.execute("INSERT INTO catalogs(version, data, signature, sha256,"
                            " created_at) VALUES (%s, %s, %s, %s, %s)",
                            (catalog.version, catalog.data, catalog.signature,
                             catalog.sha256, catalog.created_at))
            except errors.UniqueViolation:
                raise StaleCatalog(f"version {catalog.version} exists") from None
            self._audit(cur, audit)

    def latest_catalog(self, *, with_data: bool = True) -> StoredCatalog | None:
        columns = "version, data, signature, sha256, created_at" if with_data \
            else "version, signature, sha256, created_at"
        row = self._one(f"SELECT {columns} FROM catalogs ORDER BY version DESC LIMIT 1")
        if row is None:
            return None
        return StoredCatalog(int(row["version"]), bytes(row["data"]) if with_data else b"",
                             str(row["signature"]), str(row["sha256"]),
                             float(row["created_at"]))

    # -- audit ----------------------------------------------------------------------------------
    def append_audit(self, event: AuditEvent) -> None:
        with self._tx() as cur:
            self._audit(cur, event)

    def audit_rows(self) -> Iterator[AuditRow]:
        for row in self._all("SELECT * FROM audit ORDER BY seq"):
            yield AuditRow(int(row["seq"]), row["at"], row["actor"], row["action"],
                           row["subject"], row["prev_hash"], row["hash"])


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = ["SCHEMA_VERSION", "PostgresMetaStore", "upload_lock_key"]
