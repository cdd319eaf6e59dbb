"""The kiosk's small local SQLite store: queue state only, never anything personal.

It holds ids, sizes, hashes, states, times and counts (DESIGN.md, threat model 1):
which submissions exist, whether each was submitted, and each sealed part's clear
metadata (duration, sample rate, input overflows, sizes, SHA-256). Names, contacts,
answers and audio live only inside the sealed files.

WAL with ``synchronous=FULL``: a row committed before a power cut is still there after
it, which the start-up rule (delete every part of an unsubmitted submission) relies on.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

DB_NAME = "kiosk.db"

OPEN = "open"
SUBMITTED = "submitted"


@dataclass(frozen=True)
class PartRecord:
    """One sealed part's clear metadata, as stored and as shown to staff."""

    submission_id: str
    name: str
    prompt_id: str
    duration_s: float
    sample_rate: int
    frames: int
    overflows: int
    #: Size and SHA-256 of the sealed (.age) file, as the upload index carries them.
    size: int
    sha256: str
    #: Size of the Opus stream inside, for bitrate figures; reveals nothing spoken.
    opus_bytes: int
    end_reason: str
    silent: bool
    created_at: float


class Store:
    """One connection shared by the UI thread and the recorder's writer thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The recorder's writer thread records a part the moment it is sealed; the
        # lock below serialises every use of the connection.
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.path = path
        self.db = Database(conn)
        self._lock = threading.RLock()
        with self._lock:
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous=FULL")
            self._create()

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> Store:
        return cls(data_dir / DB_NAME)

    def _create(self) -> None:
        self.db["submissions"].create({
            "id": str, "state": str, "created_at": float, "submitted_at": float,
            "manifest_size": int, "manifest_sha256": str,
        }, pk="id", not_null={"state", "created_at"}, if_not_exists=True)
        # A slow hash (scrypt) of the defender's receipt code, so that a withdrawal can
        # be matched later; the code itself is never stored. Added to older stores too.
        if "receipt_hash" not in self.db["submissions"].columns_dict:
            self.db["submissions"].add_column("receipt_hash", str)
        self.db["parts"].create({
            "submission_id": str, "name": str, "prompt_id": str, "duration_s": float,
            "sample_rate": int, "frames": int, "overflows": int, "size": int,
            "sha256": str, "opus_bytes": int, "end_reason": str, "silent": int,
            "created_at": float,
        }, pk=("submission_id", "name"), foreign_keys=[("submission_id", "submissions")],
            if_not_exists=True)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # -- submissions -----------------------------------------------------------------
    def open_submission(self, submission_id: str, *, now: float) -> None:
        with self._lock, self.db.atomic():
            self.db["submissions"].insert(
                {"id": submission_id, "state": OPEN, "created_at": now}, ignore=True)

    def mark_submitted(self, submission_id: str, *, manifest_size: int,
                       manifest_sha256: str, now: float,
                       receipt_hash: str | None = None) -> None:
        with self._lock, self.db.atomic():
            self.db["submissions"].update(submission_id, {
                "state": SUBMITTED, "submitted_at": now, "manifest_size": manifest_size,
                "manifest_sha256": manifest_sha256, "receipt_hash": receipt_hash})

    def receipt_hash(self, submission_id: str) -> str | None:
        with self._lock:
            rows = list(self.db.query("select receipt_hash from submissions where id = ?",
                                      [submission_id]))
        return rows[0]["receipt_hash"] if rows else None

    def submission_state(self, submission_id: str) -> str | None:
        with self._lock:
            rows = list(self.db.query("select state from submissions where id = ?",
                                      [submission_id]))
        return rows[0]["state"] if rows else None

    def submitted_ids(self) -> set[str]:
        with self._lock:
            return {r["id"] for r in self.db.query(
                "select id from submissions where state = ?", [SUBMITTED])}

    def unsubmitted_ids(self) -> set[str]:
        with self._lock:
            return {r["id"] for r in self.db.query(
                "select id from submissions where state != ?", [SUBMITTED])}

    def delete_submission(self, submission_id: str) -> None:
        with self._lock, self.db.atomic():
            self.db.execute("delete from parts where submission_id = ?", [submission_id])
            self.db.execute("delete from submissions where id = ?", [submission_id])

    # -- parts -------------------------------------------------------------------------
    def add_part(self, part: PartRecord) -> None:
        row: dict[str, Any] = asdict(part)
        row["silent"] = int(part.silent)
        with self._lock, self.db.atomic():
            self.db["parts"].insert(row, replace=True)

    def remove_part(self, submission_id: str, name: str) -> None:
        with self._lock, self.db.atomic():
            self.db.execute("delete from parts where submission_id = ? and name = ?",
                            [submission_id, name])

    def parts(self, submission_id: str) -> list[PartRecord]:
        with self._lock:
            rows = list(self.db.query(
                "select * from parts where submission_id = ? order by created_at, name",
                [submission_id]))
        return [PartRecord(**{**r, "silent": bool(r["silent"])}) for r in rows]

    def part_names(self, submission_id: str) -> set[str]:
        return {p.name for p in self.parts(submission_id)}

    def recording_health(self) -> dict[str, int]:
        """Counts for the staff screen: parts kept, and input overflows among them."""
        with self._lock:
            row = next(self.db.query(
                "select count(*) as parts, coalesce(sum(overflows), 0) as overflows,"
                " coalesce(sum(overflows > 0), 0) as parts_with_overflows from parts"))
        return {k: int(v) for k, v in row.items()}
