"""The metadata as one SQLite file, whichever store holds it: the backup's single format.

``central backup`` keeps the metadata as a SQLite database with the SQLite store's schema
(:mod:`.sqlite_meta`), so that a backup is self-contained and can be checked offline
with nothing but Python. On the default deployment SQLite's online backup makes that
file; on PostgreSQL :func:`postgres_to_sqlite` does, reading every table in ONE
``REPEATABLE READ, READ ONLY`` transaction: one snapshot, one point in time, taken while
the service keeps writing (a reader blocks no writer), just as SQLite's copy is.

``central restore`` into PostgreSQL goes the other way (:func:`sqlite_to_postgres`):
every row in one transaction, into a database that holds none, so that a restore is
whole or absent.

The S3 upload ledger (``upload_blobs``, ``upload_blob_parts``, ``upload_tails``, see
:mod:`.s3_blobs`) is not metadata and is never copied: unfinished uploads restart at
offset 0 after a restore, as on the default path, and the restore writes the ledger
rows of the uploads it puts back (``then=``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import IsolationLevel

from .sqlite_meta import SqliteMetaStore

#: Every metadata table, parents before children (submission_parts and receipts name
#: submissions): the order rows are written in.
TABLES = ("meta", "enrol_codes", "devices", "vetters", "admins", "uploads", "submissions",
          "submission_parts", "receipts", "catalogs", "public_audio", "audit")
#: The S3 blob store's ledger, in the same database: counted when asking whether a
#: database is empty, never copied.
LEDGER_TABLES = ("upload_blobs", "upload_blob_parts", "upload_tails")
#: Meta keys that describe the store itself rather than the data in it: the target's
#: own value is kept, so a restored store states its own schema.
_STORE_KEYS = ("schema_version",)
#: Rows per batch between the two databases (bounded memory on large tables).
BATCH = 500
# Row order within a table. public_audio: SQLite's rowid and PostgreSQL's "added" both
# break ties in latest_public_audio (two audio files of one story within one clock
# tick), so each side is read in that order and written in it.
_PG_ORDER = {"meta": "key", "enrol_codes": "id", "devices": "id", "vetters": "id",
             "admins": "id", "uploads": "id", "submissions": "id",
             "submission_parts": "submission_id, name", "receipts": "submission_id",
             "catalogs": "version", "public_audio": "added", "audit": "seq"}


def _quoted(names: list[str]) -> str:
    # "offset" is a reserved word in PostgreSQL; quoting every column costs nothing.
    return ", ".join(f'"{name}"' for name in names)


def _sqlite_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [str(row[1]) for row in conn.execute(f'PRAGMA table_info("{table}")')]


def _pg_columns(conn: psycopg.Connection[Any], table: str) -> list[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns"
                        " WHERE table_schema = current_schema() AND table_name = %s"
                        " ORDER BY ordinal_position", (table,)).fetchall()
    return [str(row[0]) for row in rows]


def postgres_to_sqlite(dsn: str, target: Path) -> dict[str, int]:
    """Write every metadata row of the PostgreSQL database ``dsn`` into ``target`` (a new
    SQLite file with the SQLite store's schema), from one REPEATABLE READ, READ ONLY
    transaction; rows copied per table.

    The file is left with a rollback journal (no ``-wal`` beside it), one
    self-contained file, as :meth:`SqliteMetaStore.backup_to` leaves its copy.
    """
    SqliteMetaStore(target, create=True).close()  # the schema, made by its owner
    out = sqlite3.connect(target, isolation_level=None)
    counts: dict[str, int] = {}
    try:
        out.execute("PRAGMA journal_mode=DELETE")
        out.execute("BEGIN")
        with psycopg.connect(dsn, autocommit=False) as conn:
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                for table in TABLES:
                    columns = [c for c in _sqlite_columns(out, table)
                               if c in set(_pg_columns(conn, table))]
                    if table == "meta":
                        out.execute("DELETE FROM meta WHERE key NOT IN ("
                                    + ", ".join("?" * len(_STORE_KEYS)) + ")", _STORE_KEYS)
                    insert = (f'INSERT INTO "{table}" ({_quoted(columns)}) VALUES'
                              f' ({", ".join("?" * len(columns))})')
                    counts[table] = 0
                    for batch in _pg_batches(conn, table, columns):
                        if table == "meta":
                            batch = [r for r in batch if r[0] not in _STORE_KEYS]
                        out.executemany(insert, batch)
                        counts[table] += len(batch)
        out.execute("COMMIT")
    except BaseException:
        if out.in_transaction:
            out.execute("ROLLBACK")
        raise
    finally:
        out.close()
    return counts


def _pg_batches(conn: psycopg.Connection[Any], table: str,
                columns: list[str]) -> Iterator[list[tuple[Any, ...]]]:
    # A server-side cursor: the rows of a large table arrive BATCH at a time, all from
    # the transaction's one snapshot.
    with conn.cursor(name=f"snapshot_{table}") as cur:
        cur.execute(f'SELECT {_quoted(columns)} FROM "{table}" ORDER BY {_PG_ORDER[table]}')
        while batch := cur.fetchmany(BATCH):
            yield [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                   for row in batch]


def occupied(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Tables of the central schema (and the S3 ledger) that hold rows, with their
    counts; a database without the schema is empty. ``meta`` counts only keys other
    than the schema's own (``central init`` writes ``schema_version`` into an empty
    database)."""
    found: dict[str, int] = {}
    for table in (*TABLES, *LEDGER_TABLES):
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                              (f'"{table}"',)).fetchone()
        if not exists or not exists[0]:
            continue
        if table == "meta":
            row = conn.execute("SELECT COUNT(*) FROM meta WHERE NOT (key = ANY(%s))",
                               (list(_STORE_KEYS),)).fetchone()
        else:
            row = conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()
        if row is not None and int(row[0]) > 0:
            found[table] = int(row[0])
    return found


def database_rows(dsn: str) -> dict[str, int]:
    """:func:`occupied` for the database ``dsn`` (connects, reads, disconnects)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return occupied(conn)


class NotEmpty(Exception):
    """The target database holds rows (``tables``: table -> count)."""

    def __init__(self, tables: dict[str, int]) -> None:
        super().__init__(", ".join(f"{t}: {n}" for t, n in sorted(tables.items())))
        self.tables = tables


def sqlite_to_postgres(source: Path, dsn: str, *,
                       then: Callable[[psycopg.Cursor[Any]], None] | None = None
                       ) -> dict[str, int]:
    """Insert every row of the SQLite metadata file ``source`` into the PostgreSQL
    database ``dsn`` (its schema already made) in ONE transaction, with ``then(cursor)``
    (the S3 ledger rows) in that same transaction; rows written per table.

    :class:`NotEmpty` (nothing written) if the database holds rows: checked again
    inside the transaction, so two restores into one database cannot both write.
    """
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    counts: dict[str, int] = {}
    try:
        with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction(), \
                conn.cursor() as cur:
            # Serializes with a second restore (and with any writer, which a restore
            # target must not have): the emptiness check then holds until commit.
            cur.execute("LOCK TABLE " + ", ".join(f'"{t}"' for t in TABLES)
                        + " IN EXCLUSIVE MODE")
            there = occupied(conn)
            if there:
                raise NotEmpty(there)
            for table in TABLES:
                target_columns = set(_pg_columns(conn, table))
                columns = [c for c in _sqlite_columns(src, table) if c in target_columns]
                insert = (f'INSERT INTO "{table}" ({_quoted(columns)}) VALUES'
                          f' ({", ".join(["%s"] * len(columns))})')
                # rowid order: public_audio's "added" identity then follows SQLite's
                # rowid, the tie-break latest_public_audio relies on.
                rows = src.execute(f'SELECT {_quoted(columns)} FROM "{table}"'
                                   " ORDER BY rowid")
                counts[table] = 0
                while batch := rows.fetchmany(BATCH):
                    if table == "meta":
                        batch = [r for r in batch if r[0] not in _STORE_KEYS]
                    if batch:
                        cur.executemany(insert, batch)
                    counts[table] += len(batch)
            # Rows inserted with their own ids do not move an identity's sequence: the
            # next enrolment code would otherwise be given id 1 again.
            cur.execute("SELECT setval(pg_get_serial_sequence('enrol_codes', 'id'),"
                        " COALESCE(MAX(id), 0) + 1, false) FROM enrol_codes")
            if then is not None:
                then(cur)
    finally:
        src.close()
    return counts


__all__ = ["BATCH", "LEDGER_TABLES", "TABLES", "NotEmpty", "database_rows", "occupied",
           "postgres_to_sqlite", "sqlite_to_postgres"]
