"""The audit log's hash chain: each entry's hash covers its fields and the previous hash.

Editing, inserting or deleting any entry changes a hash that a later entry (or the
check of the entry itself) depends on, so ``central audit verify`` finds the first one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Protocol

GENESIS = "0" * 64


class _Row(Protocol):
    seq: int
    at: str
    actor: str
    action: str
    subject: str
    prev_hash: str
    hash: str


def utc_now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def entry_hash(seq: int, at: str, actor: str, action: str, subject: str, prev_hash: str) -> str:
    row = {"seq": seq, "at": at, "actor": actor, "action": action, "subject": subject,
           "prev_hash": prev_hash}
    canonical = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8") + prev_hash.encode("ascii")).hexdigest()


def first_broken(rows: Iterable[_Row]) -> tuple[int, int | None]:
    """(entries checked, seq of the first broken entry or None if the chain is intact)."""
    prev = GENESIS
    expected_seq = 1
    count = 0
    for row in rows:
        count += 1
        if (row.seq != expected_seq or row.prev_hash != prev
                or entry_hash(row.seq, row.at, row.actor, row.action, row.subject,
                              row.prev_hash) != row.hash):
            return count, expected_seq if row.seq > expected_seq else row.seq
        prev = row.hash
        expected_seq += 1
    return count, None
