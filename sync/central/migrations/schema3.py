"""Schema 3, frozen: the DDL ``central`` ran before Alembic, on each dialect, verbatim.

The baseline revision runs it on an empty database; :mod:`sync.central.schema` runs it on
a database made before Alembic (no ``alembic_version``) before stamping it at the
baseline. It is idempotent, so the second use completes an older store without touching
what is there (the tables are never re-created):

* SQLite: the statements sqlite-utils 4.2 emitted for ``sqlite_meta._create_schema`` at
  schema 3 (captured with ``set_trace_callback``), in the same order, so that
  ``sqlite_master`` reads the same as a store made then. An older store (schema 1: only
  ``meta``; schema 2: no review columns, catalogs or public audio; an early schema 3:
  no ``admins``) gains what it lacks, as that code did on every open.
* PostgreSQL: ``pg_meta._SCHEMA`` and ``s3_blobs.SCHEMA``. The S3 upload ledger is part
  of the PostgreSQL schema whether or not S3 is configured: it shares the database (and
  reads ``uploads.length``), and one versioned schema per database is what lets
  ``central migrate`` change it later. A database made before Alembic without S3
  configured gains the three (empty) ledger tables when it is adopted.

Never edit these statements: a change to the schema is a new revision in ``versions/``.
"""

from __future__ import annotations

import re
from typing import Any

#: The ``meta`` row older code reads (kept, not the version of record: Alembic's is).
SCHEMA_VERSION = 3

SQLITE = (
    'CREATE TABLE IF NOT EXISTS "meta" (\n   "key" TEXT PRIMARY KEY,\n   "value" TEXT\n);',
    'CREATE TABLE IF NOT EXISTS "enrol_codes" (\n   "id" INTEGER PRIMARY KEY,\n'
    '   "code_hash" TEXT NOT NULL,\n   "name" TEXT,\n   "created_at" REAL NOT NULL,\n'
    '   "expires_at" REAL NOT NULL,\n   "used_at" REAL,\n   "device_id" TEXT\n);',
    "CREATE UNIQUE INDEX IF NOT EXISTS enrol_codes_hash ON enrol_codes(code_hash)",
    'CREATE TABLE IF NOT EXISTS "devices" (\n   "id" TEXT PRIMARY KEY,\n   "name" TEXT,\n'
    '   "public_key" TEXT NOT NULL,\n   "token_hash" TEXT NOT NULL,\n'
    '   "enrolled_at" REAL NOT NULL,\n   "revoked_at" REAL,\n   "last_heartbeat_at" REAL,\n'
    '   "queue_depth" INTEGER,\n   "free_disk_bytes" INTEGER,\n   "app_version" TEXT,\n'
    '   "last_error" TEXT\n);',
    "CREATE UNIQUE INDEX IF NOT EXISTS devices_token ON devices(token_hash)",
    'CREATE TABLE IF NOT EXISTS "vetters" (\n   "id" TEXT PRIMARY KEY,\n'
    '   "name" TEXT NOT NULL,\n   "token_hash" TEXT NOT NULL,\n'
    '   "created_at" REAL NOT NULL,\n   "revoked_at" REAL\n);',
    "CREATE UNIQUE INDEX IF NOT EXISTS vetters_token ON vetters(token_hash)",
    'CREATE TABLE IF NOT EXISTS "admins" (\n   "id" TEXT PRIMARY KEY,\n'
    '   "name" TEXT NOT NULL,\n   "token_hash" TEXT NOT NULL,\n'
    '   "created_at" REAL NOT NULL,\n   "revoked_at" REAL\n);',
    "CREATE UNIQUE INDEX IF NOT EXISTS admins_token ON admins(token_hash)",
    'CREATE TABLE IF NOT EXISTS "uploads" (\n   "id" TEXT PRIMARY KEY,\n'
    '   "device_id" TEXT NOT NULL,\n   "submission_id" TEXT NOT NULL,\n'
    '   "part" TEXT NOT NULL,\n   "length" INTEGER NOT NULL,\n   "offset" INTEGER NOT NULL,\n'
    '   "created_at" REAL NOT NULL,\n   "expires_at" REAL NOT NULL,\n'
    '   "finished_at" REAL,\n   "sha256" TEXT\n);',
    "CREATE INDEX IF NOT EXISTS uploads_part ON uploads(device_id, submission_id, part)",
    'CREATE TABLE IF NOT EXISTS "submissions" (\n   "id" TEXT PRIMARY KEY,\n'
    '   "device_id" TEXT NOT NULL,\n   "index_text" BLOB NOT NULL,\n'
    '   "index_sha256" TEXT NOT NULL,\n   "index_signature" TEXT NOT NULL,\n'
    '   "state" TEXT NOT NULL,\n   "received_at" TEXT NOT NULL\n);',
    'CREATE TABLE IF NOT EXISTS "submission_parts" (\n'
    '   "submission_id" TEXT REFERENCES "submissions"("id"),\n   "name" TEXT,\n'
    '   "size" INTEGER NOT NULL,\n   "sha256" TEXT NOT NULL,\n'
    '   PRIMARY KEY ("submission_id", "name")\n);',
    'CREATE TABLE IF NOT EXISTS "receipts" (\n'
    '   "submission_id" TEXT PRIMARY KEY REFERENCES "submissions"("id"),\n'
    '   "receipt" BLOB NOT NULL,\n   "signature" TEXT NOT NULL\n);',
    # Issue 12's columns were always added by ALTER, on new stores too: sqlite_master
    # keeps them after the closing parenthesis, as here.
    'ALTER TABLE "submissions" ADD COLUMN "reason" TEXT;',
    'ALTER TABLE "submissions" ADD COLUMN "story_id" TEXT;',
    'ALTER TABLE "submissions" ADD COLUMN "withdrawal_key" TEXT;',
    'ALTER TABLE "submissions" ADD COLUMN "state_changed_at" REAL;',
    "CREATE INDEX IF NOT EXISTS submissions_withdrawal ON submissions(withdrawal_key)"
    " WHERE withdrawal_key IS NOT NULL",
    "CREATE UNIQUE INDEX IF NOT EXISTS submissions_story ON submissions(story_id)"
    " WHERE story_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS submissions_state ON submissions(state)",
    'CREATE TABLE IF NOT EXISTS "catalogs" (\n   "version" INTEGER PRIMARY KEY,\n'
    '   "data" BLOB NOT NULL,\n   "signature" TEXT NOT NULL,\n   "sha256" TEXT NOT NULL,\n'
    '   "created_at" REAL NOT NULL\n);',
    'CREATE TABLE IF NOT EXISTS "public_audio" (\n   "story_id" TEXT,\n   "sha256" TEXT,\n'
    '   "size" INTEGER NOT NULL,\n   "created_at" REAL NOT NULL,\n'
    '   PRIMARY KEY ("story_id", "sha256")\n);',
    'CREATE TABLE IF NOT EXISTS "audit" (\n   "seq" INTEGER PRIMARY KEY,\n'
    '   "at" TEXT NOT NULL,\n   "actor" TEXT NOT NULL,\n   "action" TEXT NOT NULL,\n'
    '   "subject" TEXT NOT NULL,\n   "prev_hash" TEXT NOT NULL,\n   "hash" TEXT NOT NULL\n);',
    "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', '3')",
)

# "offset" is a reserved word in PostgreSQL: the column keeps SQLite's name, quoted.
POSTGRES = (
    """CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT
)""",
    """CREATE TABLE IF NOT EXISTS enrol_codes (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    code_hash TEXT NOT NULL,
    name TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used_at DOUBLE PRECISION,
    device_id TEXT
)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS enrol_codes_hash ON enrol_codes(code_hash)",
    """CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    name TEXT,
    public_key TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    enrolled_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION,
    last_heartbeat_at DOUBLE PRECISION,
    queue_depth BIGINT,
    free_disk_bytes BIGINT,
    app_version TEXT,
    last_error TEXT
)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS devices_token ON devices(token_hash)",
    """CREATE TABLE IF NOT EXISTS vetters (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS vetters_token ON vetters(token_hash)",
    """CREATE TABLE IF NOT EXISTS admins (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
)""",
    "CREATE UNIQUE INDEX IF NOT EXISTS admins_token ON admins(token_hash)",
    """CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    submission_id TEXT NOT NULL,
    part TEXT NOT NULL,
    length BIGINT NOT NULL,
    "offset" BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    sha256 TEXT
)""",
    "CREATE INDEX IF NOT EXISTS uploads_part ON uploads(device_id, submission_id, part)",
    """CREATE TABLE IF NOT EXISTS submissions (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    index_text BYTEA NOT NULL,
    index_sha256 TEXT NOT NULL,
    index_signature TEXT NOT NULL,
    state TEXT NOT NULL,
    received_at TEXT NOT NULL,
    reason TEXT,
    story_id TEXT,
    withdrawal_key TEXT,
    state_changed_at DOUBLE PRECISION
)""",
    """CREATE TABLE IF NOT EXISTS submission_parts (
    submission_id TEXT NOT NULL REFERENCES submissions(id),
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (submission_id, name)
)""",
    """CREATE TABLE IF NOT EXISTS receipts (
    submission_id TEXT PRIMARY KEY REFERENCES submissions(id),
    receipt BYTEA NOT NULL,
    signature TEXT NOT NULL
)""",
    """CREATE INDEX IF NOT EXISTS submissions_withdrawal
    ON submissions(withdrawal_key) WHERE withdrawal_key IS NOT NULL""",
    """CREATE UNIQUE INDEX IF NOT EXISTS submissions_story
    ON submissions(story_id) WHERE story_id IS NOT NULL""",
    "CREATE INDEX IF NOT EXISTS submissions_state ON submissions(state)",
    """CREATE TABLE IF NOT EXISTS catalogs (
    version BIGINT PRIMARY KEY,
    data BYTEA NOT NULL,
    signature TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
)""",
    # "added" stands in for SQLite's implicit rowid, which latest_public_audio orders by
    # (two audio files of one story stored within one clock tick).
    """CREATE TABLE IF NOT EXISTS public_audio (
    story_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    added BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (story_id, sha256)
)""",
    """CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
)""",
    # The S3 blob store's upload ledger (s3_blobs.py).
    """CREATE TABLE IF NOT EXISTS upload_blobs (
    upload_id TEXT PRIMARY KEY,
    s3_upload_id TEXT NOT NULL,
    size BIGINT NOT NULL,
    completed BOOLEAN NOT NULL DEFAULT FALSE
)""",
    """CREATE TABLE IF NOT EXISTS upload_blob_parts (
    upload_id TEXT NOT NULL REFERENCES upload_blobs(upload_id) ON DELETE CASCADE,
    number INT NOT NULL,
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (upload_id, number)
)""",
    """CREATE TABLE IF NOT EXISTS upload_tails (
    upload_id TEXT PRIMARY KEY REFERENCES upload_blobs(upload_id) ON DELETE CASCADE,
    data BYTEA NOT NULL
)""",
    "INSERT INTO meta(key, value) VALUES ('schema_version', '3')"
    " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
)

_ADD_COLUMN = re.compile(r'ALTER TABLE "(\w+)" ADD COLUMN "(\w+)"')

def create(connection: Any) -> None:
    """Run schema 3's DDL on ``connection`` (a SQLAlchemy Connection, in a transaction).

    Idempotent: every CREATE says IF NOT EXISTS, and SQLite's ADD COLUMNs run only for a
    column the table lacks (SQLite has no ADD COLUMN IF NOT EXISTS).
    """
    dialect = connection.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise ValueError(f"no central schema for the {dialect} dialect")
    for statement in SQLITE if dialect == "sqlite" else POSTGRES:
        added = _ADD_COLUMN.match(statement)
        if added is not None:
            table, column = added.groups()
            have = {row[1] for row in connection.exec_driver_sql(
                f'PRAGMA table_info("{table}")')}
            if column in have:
                continue
        # exec_driver_sql: the statement goes to the driver as it is (no bind parsing).
        connection.exec_driver_sql(statement)
