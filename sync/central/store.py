"""The service's data directory: its SQLite database and its files."""

from __future__ import annotations

import os
from pathlib import Path

import sqlite_utils

DB_NAME = "central.sqlite"
SUBDIRS = ("uploads", "submissions", "public")
SCHEMA_VERSION = 1


class StoreError(Exception):
    """The data directory is missing or not a central data directory."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_db(path: Path) -> sqlite_utils.Database:
    db = sqlite_utils.Database(path)
    # WAL with FULL sync: an acknowledged upload must survive a power cut.
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def init(data_dir: Path) -> Path:
    """Create (or leave as it is) a central data directory; return the database path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for sub in SUBDIRS:
        (data_dir / sub).mkdir(exist_ok=True)
    db_path = data_dir / DB_NAME
    db = open_db(db_path)
    meta = db.table("meta", pk="key")
    if not meta.exists():
        meta.insert({"key": "schema_version", "value": str(SCHEMA_VERSION)})
    db.close()
    fsync_dir(data_dir)
    return db_path


def check(data_dir: Path) -> Path:
    db_path = data_dir / DB_NAME
    if not db_path.is_file():
        raise StoreError(f"{data_dir} is not a central data directory:"
                         f" run `central init --data {data_dir}` first")
    return db_path
