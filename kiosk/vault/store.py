"""The kiosk's small local SQLite store: queue state only, never anything personal.

It holds ids, sizes, hashes, states, times and counts (DESIGN.md, threat model 1):
which submissions exist, whether each was submitted, and each sealed part's clear
metadata (duration, sample rate, input overflows, sizes, SHA-256). Names, contacts,
answers and audio live only inside the sealed files.

WAL with ``synchronous=FULL``: a row committed before a power cut is still there after
it, which the start-up rule (delete every part of an unsubmitted submission) relies on.

The outbox (issue 11) lives here too: one ``outbox`` row per submitted submission, with
its sync state (kiosk/vault/outbox.py names the states and the moves between them),
and ``outbox_uploads`` holding the tus upload URL of each part being uploaded, so that
an upload resumes where it stopped after a crash. The outbox row is inserted in the
same transaction that marks the submission submitted: no submitted submission ever
exists without one (stores made before the outbox get theirs when they are opened).
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

# Outbox states (kiosk/vault/outbox.py has the transitions).
SEALED = "sealed"
UPLOADING = "uploading"
FINALIZING = "finalizing"
ACKNOWLEDGED = "acknowledged"
PURGED = "purged"
REJECTED = "rejected"
OUTBOX_STATES = (SEALED, UPLOADING, FINALIZING, ACKNOWLEDGED, PURGED, REJECTED)
#: States whose submission still has to reach the service (what a sync pass works on).
PENDING_STATES = (SEALED, UPLOADING, FINALIZING)


@dataclass(frozen=True)
class OutboxRow:
    """One submitted submission's place in the outbox (no personal data: ids, hashes)."""

    submission_id: str
    state: str
    entered_at: float
    updated_at: float
    attempts: int
    last_error: str | None
    index_sha256: str | None
    #: The service's receipt, exact text, and its signature; None until acknowledged.
    receipt: str | None
    receipt_signature: str | None
    acknowledged_at: float | None
    purged_at: float | None
    #: When it was last written to a USB bundle (kiosk/usb/export.py); None: never. Not a
    #: state: an exported submission stays pending (the network may still take it) and
    #: is purged only after a verified receipt, by either path.
    exported_at: float | None = None


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
        # sync.withdrawal's deterministic key of the same code, sent in the submission
        # index so that the service can match a withdrawal (issue 12). Not personal; the
        # code itself is never stored. Added to older stores too (NULL: no key was made).
        if "withdrawal_key" not in self.db["submissions"].columns_dict:
            self.db["submissions"].add_column("withdrawal_key", str)
        # The signed catalog version whose recipients the submission was sealed to (0:
        # the config's), for the submission index (issue 12, catalog sync). NULL in
        # older stores means 0.
        if "recipients_version" not in self.db["submissions"].columns_dict:
            self.db["submissions"].add_column("recipients_version", int)
        self.db["parts"].create({
            "submission_id": str, "name": str, "prompt_id": str, "duration_s": float,
            "sample_rate": int, "frames": int, "overflows": int, "size": int,
            "sha256": str, "opus_bytes": int, "end_reason": str, "silent": int,
            "created_at": float,
        }, pk=("submission_id", "name"), foreign_keys=[("submission_id", "submissions")],
            if_not_exists=True)
        self.db["outbox"].create({
            "submission_id": str, "state": str, "entered_at": float, "updated_at": float,
            "attempts": int, "last_error": str, "index_sha256": str, "receipt": str,
            "receipt_signature": str, "acknowledged_at": float, "purged_at": float,
        }, pk="submission_id", foreign_keys=[("submission_id", "submissions")],
            not_null={"state", "entered_at", "updated_at", "attempts"},
            defaults={"attempts": 0}, if_not_exists=True)
        # USB export (issue 13): a mark beside the state, never a state of its own, so the
        # state machine is unchanged. Added to older stores too (NULL: never exported).
        if "exported_at" not in self.db["outbox"].columns_dict:
            self.db["outbox"].add_column("exported_at", float)
        self.db["outbox_uploads"].create({
            "submission_id": str, "name": str, "upload_url": str,
        }, pk=("submission_id", "name"), foreign_keys=[("submission_id", "submissions")],
            not_null={"upload_url"}, if_not_exists=True)
        # A store from before the outbox: every submission it already submitted enters
        # the outbox as sealed (nothing was ever sent), in one transaction.
        self.adopt_submitted()

    def adopt_submitted(self, *, now: float | None = None) -> int:
        """Give every submitted submission without an outbox row one, ``sealed``."""
        with self._lock, self.db.atomic():
            cursor = self.db.execute(
                "insert into outbox (submission_id, state, entered_at, updated_at, attempts)"
                " select id, ?, coalesce(?, submitted_at, created_at),"
                " coalesce(?, submitted_at, created_at), 0 from submissions"
                " where state = ? and id not in (select submission_id from outbox)",
                [SEALED, now, now, SUBMITTED])
            return cursor.rowcount

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
                       receipt_hash: str | None = None,
                       withdrawal_key: str | None = None,
                       recipients_version: int = 0) -> None:
        with self._lock, self.db.atomic():
            self.db["submissions"].update(submission_id, {
                "state": SUBMITTED, "submitted_at": now, "manifest_size": manifest_size,
                "manifest_sha256": manifest_sha256, "receipt_hash": receipt_hash,
                "withdrawal_key": withdrawal_key,
                "recipients_version": recipients_version})
            # Same transaction: a submitted submission is never outside the outbox.
            self.db.execute(
                "insert or ignore into outbox (submission_id, state, entered_at, updated_at,"
                " attempts) values (?, ?, ?, ?, 0)", [submission_id, SEALED, now, now])

    def manifest_entry(self, submission_id: str) -> tuple[int, str] | None:
        """(size, SHA-256) of the sealed manifest; None if the submission is not submitted."""
        with self._lock:
            rows = list(self.db.query(
                "select manifest_size, manifest_sha256 from submissions where id = ?"
                " and state = ?", [submission_id, SUBMITTED]))
        if not rows or rows[0]["manifest_size"] is None:
            return None
        return int(rows[0]["manifest_size"]), str(rows[0]["manifest_sha256"])

    def receipt_hash(self, submission_id: str) -> str | None:
        with self._lock:
            rows = list(self.db.query("select receipt_hash from submissions where id = ?",
                                      [submission_id]))
        return rows[0]["receipt_hash"] if rows else None

    def withdrawal_key(self, submission_id: str) -> str | None:
        """The key the submission index carries (None if the kiosk made none)."""
        with self._lock:
            rows = list(self.db.query("select withdrawal_key from submissions where id = ?",
                                      [submission_id]))
        return rows[0]["withdrawal_key"] if rows else None

    def recipients_version(self, submission_id: str) -> int:
        """The catalog version whose recipients it was sealed to (0: the config's)."""
        with self._lock:
            rows = list(self.db.query("select recipients_version from submissions"
                                      " where id = ?", [submission_id]))
        return int(rows[0]["recipients_version"] or 0) if rows else 0

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
            self.db.execute("delete from outbox_uploads where submission_id = ?",
                            [submission_id])
            self.db.execute("delete from outbox where submission_id = ?", [submission_id])
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

    # -- outbox ------------------------------------------------------------------------
    # The moves between states are kiosk/vault/outbox.py's; these are the plain reads and
    # writes it makes, each one transaction.
    def outbox_row(self, submission_id: str) -> OutboxRow | None:
        with self._lock:
            rows = list(self.db.query("select * from outbox where submission_id = ?",
                                      [submission_id]))
        return OutboxRow(**rows[0]) if rows else None

    def outbox_rows(self, states: tuple[str, ...] | None = None) -> list[OutboxRow]:
        """Rows in ``states`` (all if None), oldest first (entered_at, then id)."""
        sql = "select * from outbox"
        args: list[Any] = []
        if states is not None:
            sql += f" where state in ({', '.join('?' for _ in states)})"
            args.extend(states)
        with self._lock:
            rows = list(self.db.query(sql + " order by entered_at, submission_id", args))
        return [OutboxRow(**r) for r in rows]

    def outbox_counts(self) -> dict[str, int]:
        with self._lock:
            rows = list(self.db.query(
                "select state, count(*) as n from outbox group by state order by state"))
        return {str(r["state"]): int(r["n"]) for r in rows}

    def exported_waiting(self) -> int:
        """Submissions exported to a USB stick whose receipt has not come back yet."""
        marks = ", ".join("?" for _ in PENDING_STATES)
        with self._lock:
            row = self.db.execute(
                f"select count(*) from outbox where exported_at is not null"
                f" and state in ({marks})", list(PENDING_STATES)).fetchone()
        return int(row[0])

    def update_outbox(self, submission_id: str, *, expect: tuple[str, ...],
                      changes: dict[str, Any], forget_uploads: tuple[str, ...] | None = None,
                      bump_attempts: bool = False) -> bool:
        """Apply ``changes`` if the row is in one of ``expect``; False if it was not.

        ``forget_uploads``: part names whose upload URL is dropped in the same
        transaction (an empty tuple: none; None: none either).
        """
        sets = ", ".join(f"{k} = ?" for k in changes)
        if bump_attempts:
            sets += ", attempts = attempts + 1"
        with self._lock, self.db.atomic():
            cursor = self.db.execute(
                f"update outbox set {sets} where submission_id = ?"
                f" and state in ({', '.join('?' for _ in expect)})",
                [*changes.values(), submission_id, *expect])
            if cursor.rowcount != 1:
                return False
            for name in forget_uploads or ():
                self.db.execute("delete from outbox_uploads where submission_id = ?"
                                " and name = ?", [submission_id, name])
            return True

    def mark_exported(self, submission_ids: list[str], *, now: float) -> int:
        """Set ``exported_at`` on those of ``submission_ids`` still pending (one
        transaction; the state is left as it is); how many were marked."""
        marked = 0
        with self._lock, self.db.atomic():
            for submission_id in submission_ids:
                marked += self.db.execute(
                    f"update outbox set exported_at = ? where submission_id = ?"
                    f" and state in ({', '.join('?' for _ in PENDING_STATES)})",
                    [now, submission_id, *PENDING_STATES]).rowcount
        return marked

    def upload_url(self, submission_id: str, name: str) -> str | None:
        with self._lock:
            rows = list(self.db.query(
                "select upload_url from outbox_uploads where submission_id = ? and name = ?",
                [submission_id, name]))
        return rows[0]["upload_url"] if rows else None

    def set_upload_url(self, submission_id: str, name: str, url: str) -> None:
        with self._lock, self.db.atomic():
            self.db.execute("insert or replace into outbox_uploads (submission_id, name,"
                            " upload_url) values (?, ?, ?)", [submission_id, name, url])

    def forget_upload_url(self, submission_id: str, name: str) -> None:
        with self._lock, self.db.atomic():
            self.db.execute("delete from outbox_uploads where submission_id = ? and name = ?",
                            [submission_id, name])

    def forget_all_upload_urls(self) -> int:
        """After a re-enrolment: the old device's uploads are not the new one's."""
        with self._lock, self.db.atomic():
            return self.db.execute("delete from outbox_uploads").rowcount
