"""Blobs in S3 (bytes) with an upload ledger in PostgreSQL (issue 14): the scale-out
:class:`~.base.BlobStore`.

Keys under the S3Objects prefix: ``uploads/<id>`` (a multipart upload while it grows,
one object once complete), ``parts/<sid>/<sha256>``, ``public/<story>/<sha256>``.

Why a ledger: S3 cannot append, and a multipart upload's parts can neither be read nor
listed reliably on every S3-compatible store before completion. So an upload's state
(which parts are stored, with their ETags and SHA-256s, and the bytes after the last
whole part, the "tail") lives in PostgreSQL, in the same database as the metadata
store's ``uploads`` table, and nothing depends on listing the bucket.

An append (:class:`S3Append`) spools its bytes to an anonymous temporary file. On
commit, every whole PART of (tail + spool) goes to S3 as the next part number (durable in
S3 but not yet recorded); then ONE PostgreSQL transaction records those parts, replaces
the tail, sets the ledger size and moves ``uploads."offset"`` (never backwards). So the
offset and the list of stored parts move together. A crash before that transaction
leaves unrecorded S3 parts, which the next commit overwrites under the same numbers.

When the ledger size reaches the upload's declared length (``uploads.length``) the tail
is uploaded as the last part and the multipart upload completed; only after S3 confirms
is completion recorded (and the tail dropped) in a transaction. A crash in between is
rolled forward by the next commit at that offset or by :meth:`S3BlobStore.read_upload`.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg_pool import ConnectionPool

from ..schema import check_postgres, ensure_postgres
from .base import BlobMissing, ChecksumMismatch, OffsetMismatch, StorageError, append_all
from .file_blobs import _SHA256, _STORY_ID, _SUBMISSION_ID, _UPLOAD_ID, _check
from .s3_objects import MIN_PART_SIZE, PartReceipt, S3Objects

log = logging.getLogger("central")

#: Bytes per multipart part: every part but the last must be >= S3's 5 MiB minimum;
#: 8 MiB keeps a 2 GiB upload at 256 parts (S3 allows 10 000).
PART = 8 * 1024 * 1024
assert PART >= MIN_PART_SIZE
SPOOL_READ = 1024 * 1024

# The ledger's tables (upload_blobs, upload_blob_parts, upload_tails) are part of the
# PostgreSQL schema, made and changed by Alembic (sync/central/migrations/schema3.py).


def _configure(conn: psycopg.Connection[Any]) -> None:
    # A recorded part or offset must survive a power cut whatever the server's default
    # says: a commit returns only after its WAL is flushed (as pg_meta does).
    conn.execute("SET synchronous_commit TO on")


#: Named points where :attr:`S3BlobStore.hook` is called, so that the crash tests can
#: end the process exactly between an S3 write and the PostgreSQL record of it.
HOOK_PART_UPLOADED = "part_uploaded"
HOOK_LAST_PART_UPLOADED = "last_part_uploaded"
HOOK_COMPLETED_IN_S3 = "completed_in_s3"


@dataclass(frozen=True)
class _Ledger:
    s3_upload_id: str
    size: int
    completed: bool
    parts: tuple[PartReceipt, ...]
    tail: bytes


def _upload_key(upload_id: str) -> str:
    return "uploads/" + _check(_UPLOAD_ID, upload_id, "upload id")


def _part_key(submission_id: str, sha256: str) -> str:
    return (f"parts/{_check(_SUBMISSION_ID, submission_id, 'submission id')}/"
            f"{_check(_SHA256, sha256, 'sha256')}")


def _public_key(story_id: str, sha256: str) -> str:
    return f"public/{_check(_STORY_ID, story_id, 'story id')}/{_check(_SHA256, sha256, 'sha256')}"


class S3Append:
    """Bytes for one append, spooled to an unnamed temporary file (never all in memory:
    a PATCH body may be hundreds of MiB) until :meth:`commit`."""

    def __init__(self, store: S3BlobStore, upload_id: str, ledger: _Ledger,
                 spool_dir: Path | None) -> None:
        self._store = store
        self._upload_id = upload_id
        self._ledger = ledger
        self.start = ledger.size
        self.size = ledger.size
        # TemporaryFile is unlinked at once: a crash leaves nothing to clean up.
        self._spool: IO[bytes] | None = tempfile.TemporaryFile(dir=spool_dir)

    def write(self, data: bytes) -> None:
        if self._spool is None:
            raise StorageError("append already committed or aborted")
        self._spool.write(data)
        self.size += len(data)

    def commit(self) -> int:
        """Store the spooled bytes (parts in S3, the rest as the tail) and record them
        with the new offset in one transaction; the new size. On an error before that
        transaction nothing is recorded (the upload is as it was) and it is re-raised."""
        if self._spool is None:
            raise StorageError("append already committed or aborted")
        try:
            size = self._store._commit(self._upload_id, self._ledger, self._spool, self.size)
        finally:
            self.abort()
        return size

    def abort(self) -> None:
        """Drop the spool: nothing in S3 or PostgreSQL changes. Safe to repeat."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None


class S3BlobStore:
    """:class:`~.base.BlobStore` on S3 (through :class:`S3Objects`) and PostgreSQL."""

    def __init__(self, objects: S3Objects, dsn: str, *, create: bool = False,
                 spool_dir: Path | None = None, pool_size: int = 8, timeout: float = 30.0,
                 part_uploads: int = 4, hook: Callable[[str], None] | None = None) -> None:
        self.objects = objects
        self.spool_dir = spool_dir
        self._part_slots = threading.BoundedSemaphore(part_uploads)
        #: Called with a HOOK_* name at each point between an S3 write and its record
        #: (tests only: the crash tests make it end the process there).
        self.hook = hook
        # As pg_meta's pool: a dead pooled connection (PostgreSQL restarted) is
        # replaced rather than failing the request that drew it.
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            dsn, min_size=1, max_size=pool_size, timeout=timeout, open=False,
            kwargs={"autocommit": True}, configure=_configure,
            check=ConnectionPool.check_connection, name="central-blob-ledger")
        # One plain connection first: a wrong URL fails at once with libpq's reason,
        # where the pool would retry quietly until its timeout.
        psycopg.connect(dsn, connect_timeout=max(2, int(timeout))).close()
        self._pool.open(wait=True, timeout=timeout)
        try:
            with self._pool.connection() as conn:
                if create:
                    ensure_postgres(conn, dsn)  # `central init`: to Alembic's head
                else:
                    check_postgres(conn)  # refused unless at the head (`central migrate`)
                found = conn.execute(
                    "SELECT to_regclass('upload_blobs') IS NOT NULL").fetchone()
            if not found or not found[0]:
                raise StorageError("no upload ledger: run `central init`")
        except BaseException:
            self._pool.close()
            raise

    def close(self) -> None:
        self._pool.close()

    def _hook(self, point: str) -> None:
        if self.hook is not None:
            self.hook(point)

    # -- the ledger -------------------------------------------------------------------------
    def _ledger(self, conn: psycopg.Connection[Any], upload_id: str, *,
                lock: bool = False) -> _Ledger | None:
        row = conn.execute(
            "SELECT s3_upload_id, size, completed FROM upload_blobs WHERE upload_id = %s"
            + (" FOR UPDATE" if lock else ""), (upload_id,)).fetchone()
        if row is None:
            return None
        parts = tuple(PartReceipt(number=int(n), etag=str(e), sha256=str(s), size=int(z))
                      for n, z, e, s in conn.execute(
                          "SELECT number, size, etag, sha256 FROM upload_blob_parts"
                          " WHERE upload_id = %s ORDER BY number", (upload_id,)))
        tail_row = conn.execute("SELECT data FROM upload_tails WHERE upload_id = %s",
                                (upload_id,)).fetchone()
        tail = bytes(tail_row[0]) if tail_row is not None else b""
        return _Ledger(str(row[0]), int(row[1]), bool(row[2]), parts, tail)

    def _read_ledger(self, upload_id: str) -> _Ledger | None:
        with self._pool.connection() as conn, conn.transaction():
            return self._ledger(conn, upload_id)

    @staticmethod
    def _declared_length(conn: psycopg.Connection[Any], upload_id: str) -> int | None:
        # The metadata store's table, same database: the blob store needs the length
        # to know when to complete. None for a blob without a row (the bench sink).
        row = conn.execute("SELECT length FROM uploads WHERE id = %s",
                           (upload_id,)).fetchone()
        return None if row is None else int(row[0])

    # -- uploads ------------------------------------------------------------------------------
    def create_upload(self, upload_id: str) -> None:
        key = _upload_key(upload_id)
        s3_id = self.objects.create_multipart(key)
        with self._pool.connection() as conn, conn.transaction():
            old = self._ledger(conn, upload_id, lock=True)
            conn.execute("DELETE FROM upload_blobs WHERE upload_id = %s", (upload_id,))
            conn.execute("INSERT INTO upload_blobs(upload_id, s3_upload_id, size, completed)"
                         " VALUES (%s, %s, 0, FALSE)", (upload_id, s3_id))
        if old is not None:
            # After the new row is durable: a crash before this leaks only an old
            # multipart upload (a bucket lifecycle rule aborts those), never the new one.
            self.objects.abort_multipart(key, old.s3_upload_id)
            if old.completed:
                self.objects.delete(key)

    def upload_size(self, upload_id: str) -> int | None:
        ledger = self._read_ledger(_check(_UPLOAD_ID, upload_id, "upload id"))
        return None if ledger is None else ledger.size

    def open_append(self, upload_id: str, expected_offset: int) -> S3Append:
        ledger = self._read_ledger(_check(_UPLOAD_ID, upload_id, "upload id"))
        if ledger is None:
            raise OffsetMismatch(0)
        if ledger.size != expected_offset:
            # Fewer bytes: the usual mismatch. More: cannot happen through the API,
            # because commit moves the ledger and uploads."offset" in one transaction;
            # dropping recorded parts is not possible here (a multipart upload cannot
            # be cut back), so the caller is told the real size instead.
            raise OffsetMismatch(ledger.size)
        return S3Append(self, upload_id, ledger, self.spool_dir)

    def _commit(self, upload_id: str, ledger: _Ledger, spool: IO[bytes], new_size: int) -> int:
        key = _upload_key(upload_id)
        if new_size == ledger.size:
            # Nothing written: still the place where an interrupted completion is
            # rolled forward (the client repeats its last PATCH at the final offset).
            self._complete_if_due(upload_id)
            return new_size
        if ledger.completed:
            raise StorageError("the upload is complete: nothing can be appended")
        # A part is built in memory (PART bytes, and boto3's copy as it sends): a few at
        # a time per instance, so that 50 kiosks uploading at once cost a bounded
        # amount of memory (the benchmark saw 1.1 GB without this) rather than one
        # part each; the others wait their turn with their chunk spooled on disk.
        with self._part_slots:
            spool.flush()
            spool.seek(0)
            pending = bytearray(ledger.tail)
            number = len(ledger.parts) + 1
            uploaded: list[PartReceipt] = []
            while True:
                # Top up to one PART from the spool, a MiB at a time.
                while len(pending) < PART:
                    more = spool.read(min(SPOOL_READ, PART - len(pending)))
                    if not more:
                        break
                    pending += more
                if len(pending) < PART:
                    break
                body = bytes(pending[:PART])
                del pending[:PART]
                receipt = self.objects.upload_part(key, ledger.s3_upload_id, number, body,
                                                   hashlib.sha256(body).hexdigest())
                uploaded.append(receipt)
                number += 1
                self._hook(HOOK_PART_UPLOADED)
        with self._pool.connection() as conn, conn.transaction():
            current = self._ledger(conn, upload_id, lock=True)
            if current is None or current.s3_upload_id != ledger.s3_upload_id \
                    or current.size != ledger.size:
                # Someone else changed the upload since open_append (the API's lock
                # prevents this; a second process without it must not win silently).
                raise OffsetMismatch(0 if current is None else current.size)
            for part in uploaded:
                conn.execute("INSERT INTO upload_blob_parts(upload_id, number, size, etag,"
                             " sha256) VALUES (%s, %s, %s, %s, %s)",
                             (upload_id, part.number, part.size, part.etag, part.sha256))
            conn.execute("DELETE FROM upload_tails WHERE upload_id = %s", (upload_id,))
            if pending:
                conn.execute("INSERT INTO upload_tails(upload_id, data) VALUES (%s, %s)",
                             (upload_id, bytes(pending)))
            conn.execute("UPDATE upload_blobs SET size = %s WHERE upload_id = %s",
                         (new_size, upload_id))
            conn.execute('UPDATE uploads SET "offset" = %s WHERE id = %s AND "offset" <= %s',
                         (new_size, upload_id, new_size))
        # The bytes are recorded with the offset: from here on the append has happened,
        # so a failure to complete must not be reported as a failed append. It is
        # logged and rolled forward later (read_upload, or a repeated PATCH).
        try:
            self._complete_if_due(upload_id)
        except StorageError as exc:
            log.warning("upload_complete_deferred upload %s: %s", upload_id,
                        type(exc).__name__)
        return new_size

    def _complete_if_due(self, upload_id: str) -> bool:
        """Complete the multipart upload if the ledger holds the declared length;
        True if the upload is (now) complete."""
        with self._pool.connection() as conn, conn.transaction():
            ledger = self._ledger(conn, upload_id)
            length = self._declared_length(conn, upload_id)
        if ledger is None:
            return False
        if ledger.completed:
            return True
        if length is None or ledger.size != length:
            return False
        key = _upload_key(upload_id)
        receipts = list(ledger.parts)
        last: PartReceipt | None = None
        if ledger.tail:
            number = len(ledger.parts) + 1
            sha256 = hashlib.sha256(ledger.tail).hexdigest()
            try:
                last = self.objects.upload_part(key, ledger.s3_upload_id, number,
                                                ledger.tail, sha256)
            except BlobMissing:
                # The upload is gone: completed before a crash that came before its
                # record. complete_multipart checks the object against these parts
                # (SHA-256s, or the MD5 ETags S3 gives unencrypted parts).
                md5 = hashlib.md5(ledger.tail, usedforsecurity=False).hexdigest()
                last = PartReceipt(number=number, etag=f'"{md5}"', sha256=sha256,
                                   size=len(ledger.tail))
            receipts.append(last)
            self._hook(HOOK_LAST_PART_UPLOADED)
        if not receipts:
            raise StorageError("an empty upload cannot be completed")
        self.objects.complete_multipart(key, ledger.s3_upload_id, receipts)
        self._hook(HOOK_COMPLETED_IN_S3)
        with self._pool.connection() as conn, conn.transaction():
            current = self._ledger(conn, upload_id, lock=True)
            if current is None or current.s3_upload_id != ledger.s3_upload_id:
                raise StorageError("the upload was replaced while it was completed")
            if not current.completed:
                if last is not None:
                    # The tail goes in the same transaction that records its part.
                    conn.execute("INSERT INTO upload_blob_parts(upload_id, number, size,"
                                 " etag, sha256) VALUES (%s, %s, %s, %s, %s)",
                                 (upload_id, last.number, last.size, last.etag, last.sha256))
                conn.execute("DELETE FROM upload_tails WHERE upload_id = %s", (upload_id,))
                conn.execute("UPDATE upload_blobs SET completed = TRUE WHERE upload_id = %s",
                             (upload_id,))
        return True

    def append_upload(self, upload_id: str, expected_offset: int,
                      chunks: Iterable[bytes]) -> int:
        return append_all(self.open_append(upload_id, expected_offset), chunks)

    def truncate_upload(self, upload_id: str, size: int) -> None:
        current = self.upload_size(upload_id)
        if current is None:
            raise BlobMissing("no such upload")
        if size != current:
            # Recorded parts cannot be cut back in a multipart upload; and the ledger
            # never holds more than the committed offset, so reconciliation never needs
            # this (it calls it only when the blob is longer than the offset).
            raise StorageError("an S3 upload can only be 'truncated' to its current size")

    def read_upload(self, upload_id: str, start: int = 0,
                    end: int | None = None) -> Iterator[bytes]:
        ledger = self._read_ledger(_check(_UPLOAD_ID, upload_id, "upload id"))
        if ledger is None:
            raise BlobMissing("no such upload")
        if not ledger.completed and not self._complete_if_due(upload_id):
            raise StorageError("the upload is not complete: S3 cannot read the parts of"
                               " a multipart upload before it is completed")
        return self.objects.get_object(_upload_key(upload_id), start, end)

    def delete_upload(self, upload_id: str) -> None:
        key = _upload_key(upload_id)
        ledger = self._read_ledger(upload_id)
        if ledger is not None:
            self.objects.abort_multipart(key, ledger.s3_upload_id)
        self.objects.delete(key)
        # Rows last: until they go, a retry after a failure here still knows the
        # multipart upload to abort.
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("DELETE FROM upload_blobs WHERE upload_id = %s", (upload_id,))

    def list_uploads(self) -> list[str]:
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT upload_id FROM upload_blobs ORDER BY upload_id")
            return [str(row[0]) for row in rows]

    def stray_upload_files(self) -> list[str]:
        return []  # no files: the ledger only ever holds upload ids

    def remove_stray_upload_file(self, name: str) -> None:
        return None

    def stray_part_temps(self) -> list[Path]:
        return []  # S3 PUTs and copies are atomic: no temporaries are left behind

    def stray_public_temps(self) -> list[Path]:
        return []

    # -- parts --------------------------------------------------------------------------------
    def put_part_from_upload(self, upload_id: str, submission_id: str, sha256: str) -> None:
        target = _part_key(submission_id, sha256)
        source = _upload_key(upload_id)
        if self.objects.head(target) is not None:
            return  # same key, same content
        ledger = self._read_ledger(upload_id)
        if ledger is None:
            raise BlobMissing("no such upload")
        if not ledger.completed and not self._complete_if_due(upload_id):
            raise StorageError("the upload is not complete")
        # Server-side copy: no bytes pass through here. S3Objects.copy compares the
        # store's full-object SHA-256 with ``sha256`` and removes a mismatching copy.
        info = self.objects.copy(source, target, expect_sha256=sha256)
        if info.sha256_b64 is None:
            # A store that computes no checksum: hash the copy ourselves.
            digest = hashlib.sha256()
            for data in self.objects.get_object(target):
                digest.update(data)
            if digest.hexdigest() != sha256:
                self.objects.delete(target)
                raise ChecksumMismatch("upload bytes do not hash to the part's SHA-256")

    def part_size(self, submission_id: str, sha256: str) -> int | None:
        return self.objects.size(_part_key(submission_id, sha256))

    def read_part(self, submission_id: str, sha256: str, start: int = 0,
                  end: int | None = None) -> Iterator[bytes]:
        return self.objects.get_object(_part_key(submission_id, sha256), start, end)

    def list_parts(self) -> list[tuple[str, str, float]]:
        # A listing of the parts/ prefix, not rows: it is used only by the start-up
        # sweep of unreferenced parts, where a listing that lags merely postpones a
        # deletion to the next start (young parts are kept for a grace period anyway).
        out = []
        for info in self.objects.list_objects("parts"):
            bits = info.key.split("/")
            if len(bits) == 3 and _SUBMISSION_ID.fullmatch(bits[1]) \
                    and _SHA256.fullmatch(bits[2]):
                out.append((bits[1], bits[2], info.last_modified))
        return sorted(out)

    def delete_part(self, submission_id: str, sha256: str) -> None:
        self.objects.delete(_part_key(submission_id, sha256))

    # -- public audio ---------------------------------------------------------------------------
    def put_public_audio(self, story_id: str, sha256: str, chunks: Iterable[bytes]) -> int:
        key = _public_key(story_id, sha256)
        counted = [0]

        def counting() -> Iterator[bytes]:
            for chunk in chunks:
                counted[0] += len(chunk)
                yield chunk

        # put_object hashes before sending (ChecksumMismatch, nothing stored) and
        # If-None-Match keeps existing audio as it is.
        if self.objects.put_object(key, counting(), sha256, if_absent=True):
            return counted[0]
        size = self.objects.size(key)
        if size is None:
            raise StorageError("public audio vanished after a conditional put")
        return size

    def public_audio_size(self, story_id: str, sha256: str) -> int | None:
        return self.objects.size(_public_key(story_id, sha256))

    def read_public_audio(self, story_id: str, sha256: str, start: int = 0,
                          end: int | None = None) -> Iterator[bytes]:
        return self.objects.get_object(_public_key(story_id, sha256), start, end)

