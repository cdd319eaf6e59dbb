"""The outbox state machine, fed events one by one (no network), and the start-up
reconciliation of outbox rows with the files on disk."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kiosk.ids import new_submission_id
from kiosk.staff.wipe import wipe_unsent
from kiosk.vault.layout import OUTBOX
from kiosk.vault.outbox import (
    ATTEMPT_FAILED,
    FILES_MISSING,
    PARTS_NOT_UPLOADED,
    PURGED_EVENT,
    RECEIPT_VERIFIED,
    REJECTED_EVENT,
    TRANSITIONS,
    UPLOAD_STARTED,
    UPLOADED,
    IllegalMove,
    StoreOutbox,
    next_state,
    receipt_holds,
    submission_files,
)
from kiosk.vault.store import OUTBOX_STATES, SUBMITTED, Store
from kiosk.vault.sweep import reconcile_outbox, sweep
from sync.signing import SigningKey
from sync.wire import PartEntry, Receipt, SubmissionIndex
from tests.sync_fakes import make_submission

T0 = 1_800_000_000.0
DAY = 86_400.0
DEVICE = "dev-0123456789abcdef"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    s = Store.in_data_dir(data_dir)
    yield s
    s.close()


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def service() -> SigningKey:
    return SigningKey.generate()


def index_of(data_dir: Path, store: Store, sid: str) -> SubmissionIndex:
    files = submission_files(data_dir, store, sid)
    return SubmissionIndex.build(submission_id=sid, device_id=DEVICE, recipients_version=0,
                                 parts=[PartEntry(f.name, f.size, f.sha256) for f in files])


def index_sha(data_dir: Path, store: Store, sid: str) -> str:
    return hashlib.sha256(index_of(data_dir, store, sid).to_bytes()).hexdigest()


def receipt_for(data_dir: Path, store: Store, sid: str, key: SigningKey) -> tuple[str, str]:
    index = index_of(data_dir, store, sid)
    signed = Receipt.for_index(index, index.to_bytes(),
                               received_at=datetime.now(UTC)).sign(key)
    return signed.data.decode(), signed.signature


def acknowledge(outbox: StoreOutbox, store: Store, sid: str, key: SigningKey) -> None:
    outbox.start_uploading(sid)
    outbox.uploaded(sid, index_sha(outbox.data_dir, store, sid))
    receipt, signature = receipt_for(outbox.data_dir, store, sid, key)
    outbox.acknowledge(sid, receipt=receipt, signature=signature)


# -- the transitions, pure ----------------------------------------------------------------------

def test_the_happy_path_event_by_event() -> None:
    state = "sealed"
    seen = [state]
    for event in (UPLOAD_STARTED, UPLOADED, PARTS_NOT_UPLOADED, UPLOADED, RECEIPT_VERIFIED,
                  PURGED_EVENT):
        state = next_state(state, event)
        seen.append(state)
    assert seen == ["sealed", "uploading", "finalizing", "uploading", "finalizing",
                    "acknowledged", "purged"]


@pytest.mark.parametrize("start", ["sealed", "uploading", "finalizing"])
def test_pending_states_can_fail_an_attempt_or_be_rejected(start: str) -> None:
    assert next_state(start, ATTEMPT_FAILED) == start
    assert next_state(start, REJECTED_EVENT) == "rejected"
    assert next_state(start, FILES_MISSING) == "rejected"


def test_everything_else_is_illegal() -> None:
    events = {e for _, e in TRANSITIONS}
    legal = set(TRANSITIONS)
    for state in OUTBOX_STATES:
        for event in events:
            if (state, event) in legal:
                continue
            with pytest.raises(IllegalMove):
                next_state(state, event)
    # The safety rules, spelled out: nothing reaches acknowledged but a verified
    # receipt from finalizing, nothing reaches purged but from acknowledged, and
    # nothing leaves acknowledged, purged or rejected except acknowledged -> purged.
    assert {s for (s, e), n in TRANSITIONS.items() if n == "acknowledged"} == {"finalizing"}
    assert {e for (s, e), n in TRANSITIONS.items() if n == "acknowledged"} == {RECEIPT_VERIFIED}
    assert {s for (s, e), n in TRANSITIONS.items() if n == "purged"} == {"acknowledged"}
    assert {(s, n) for (s, e), n in TRANSITIONS.items()
            if s in ("acknowledged", "purged", "rejected")} == {("acknowledged", "purged")}


# -- over the store -------------------------------------------------------------------------------

def test_submit_enters_the_outbox_sealed_in_the_same_transaction(data_dir, store) -> None:
    sid = new_submission_id()
    store.open_submission(sid, now=T0)
    assert store.outbox_row(sid) is None
    store.mark_submitted(sid, manifest_size=1, manifest_sha256="0" * 64, now=T0 + 1)
    row = store.outbox_row(sid)
    assert (row.state, row.entered_at, row.attempts, row.receipt) == ("sealed", T0 + 1, 0, None)
    # A failed commit leaves neither: a forced failure inside the transaction.
    other = new_submission_id()
    store.open_submission(other, now=T0)
    store.db.execute("create trigger fail before insert on outbox begin"
                     " select raise(abort, 'boom'); end")
    with pytest.raises(sqlite3.IntegrityError):
        store.mark_submitted(other, manifest_size=1, manifest_sha256="0" * 64, now=T0)
    assert store.submission_state(other) == "open" and store.outbox_row(other) is None


def test_a_store_from_before_the_outbox_gets_its_submitted_ones_sealed(data_dir) -> None:
    data_dir.mkdir(parents=True)
    conn = sqlite3.connect(data_dir / "kiosk.db")
    conn.executescript(
        "create table submissions (id text primary key, state text not null, created_at"
        " float not null, submitted_at float, manifest_size integer, manifest_sha256 text);"
        "create table parts (submission_id text, name text, prompt_id text);")
    old = [new_submission_id() for _ in range(2)]
    conn.execute("insert into submissions values (?, 'submitted', 1.0, 2.0, 1, 'a')", [old[0]])
    conn.execute("insert into submissions values (?, 'submitted', 1.0, 3.0, 1, 'a')", [old[1]])
    conn.execute("insert into submissions values (?, 'open', 1.0, null, null, null)",
                 [new_submission_id()])
    conn.commit()
    conn.close()
    store = Store.in_data_dir(data_dir)
    rows = store.outbox_rows()
    assert [(r.submission_id, r.state, r.entered_at) for r in rows] == [
        (old[0], "sealed", 2.0), (old[1], "sealed", 3.0)]
    store.close()
    assert len(Store.in_data_dir(data_dir).outbox_rows()) == 2  # once only


def test_every_move_is_recorded_with_its_error_and_attempts(data_dir, store, service) -> None:
    clock = Clock()
    outbox = StoreOutbox(data_dir, store, now=clock)
    sid = make_submission(data_dir, store)
    outbox.attempt_failed(sid, "network")
    row = store.outbox_row(sid)
    assert (row.state, row.attempts, row.last_error) == ("sealed", 1, "network")
    clock.t += 5
    outbox.start_uploading(sid)
    store.set_upload_url(sid, "q1-1.age", "http://x/api/v1/uploads/" + "a" * 32)
    sha = index_sha(data_dir, store, sid)
    outbox.uploaded(sid, sha)
    row = store.outbox_row(sid)
    assert (row.state, row.index_sha256, row.last_error, row.updated_at) == (
        "finalizing", sha, None, T0 + 5)
    outbox.reupload(sid, ("q1-1.age",))
    assert store.outbox_row(sid).state == "uploading"
    assert store.upload_url(sid, "q1-1.age") is None  # forgotten in the same transaction
    outbox.uploaded(sid, sha)
    with pytest.raises(IllegalMove):
        outbox.apply(sid, PURGED_EVENT)  # never from finalizing
    receipt, signature = receipt_for(data_dir, store, sid, service)
    outbox.acknowledge(sid, receipt=receipt, signature=signature)
    row = store.outbox_row(sid)
    assert (row.state, row.receipt, row.receipt_signature, row.acknowledged_at) == (
        "acknowledged", receipt, signature, T0 + 5)
    assert receipt_holds(store, row, service.verify_key)
    with pytest.raises(IllegalMove):
        outbox.reject(sid, "index_conflict")  # acknowledged is final
    with pytest.raises(IllegalMove):
        outbox.apply(new_submission_id(), UPLOAD_STARTED)  # no row


def test_purge_needs_the_retention_and_a_receipt_that_verifies(data_dir, store,
                                                               service) -> None:
    clock = Clock()
    outbox = StoreOutbox(data_dir, store, now=clock)
    sid = make_submission(data_dir, store)
    acknowledge(outbox, store, sid, service)
    clock.t = T0 + 7 * DAY - 1
    assert outbox.purge_due(retention_days=7, service_key=service.verify_key) == 0
    clock.t = T0 + 7 * DAY
    # Another service's key (or none) does not vouch for the receipt: kept.
    assert outbox.purge_due(retention_days=7,
                            service_key=SigningKey.generate().verify_key) == 0
    assert outbox.purge_due(retention_days=7, service_key=None) == 0
    assert (data_dir / OUTBOX / sid).is_dir()
    assert outbox.purge_due(retention_days=7, service_key=service.verify_key) == 1
    assert not (data_dir / OUTBOX / sid).exists()
    row = store.outbox_row(sid)
    assert (row.state, row.purged_at) == ("purged", T0 + 7 * DAY) and row.receipt
    assert store.manifest_entry(sid) is not None and store.parts(sid)


def test_a_receipt_for_other_files_does_not_hold(data_dir, store, service) -> None:
    outbox = StoreOutbox(data_dir, store, now=Clock())
    sid = make_submission(data_dir, store)
    acknowledge(outbox, store, sid, service)
    # The store's hash of a part changed since (it never should): the receipt no longer
    # vouches for what the kiosk holds.
    store.db.execute("update parts set sha256 = ? where submission_id = ?", ["e" * 64, sid])
    assert not receipt_holds(store, store.outbox_row(sid), service.verify_key)


# -- reconciliation at start-up ---------------------------------------------------------------

def test_pending_submissions_with_missing_files_become_rejected(data_dir, store) -> None:
    whole = make_submission(data_dir, store)
    no_folder = make_submission(data_dir, store)
    no_part = make_submission(data_dir, store)
    shutil.rmtree(data_dir / OUTBOX / no_folder)
    (data_dir / OUTBOX / no_part / "q1-1.age").unlink()
    report = sweep(data_dir, store)
    assert report.outbox.missing == 2
    for sid in (no_folder, no_part):
        row = store.outbox_row(sid)
        assert (row.state, row.last_error) == ("rejected", "local_file_missing")
        assert store.submission_state(sid) == SUBMITTED  # never silently dropped
    assert store.outbox_row(whole).state == "sealed"
    assert sorted(p.name for p in (data_dir / OUTBOX / whole).iterdir()) == [
        "manifest.json.age", "q1-1.age"]


def test_acknowledged_past_retention_are_purged_and_the_rest_kept(data_dir, store,
                                                                  service) -> None:
    outbox = StoreOutbox(data_dir, store, now=Clock())
    old = make_submission(data_dir, store)
    recent = make_submission(data_dir, store)
    acknowledge(outbox, store, old, service)
    outbox.now = Clock(T0 + 3 * DAY)
    acknowledge(outbox, store, recent, service)
    pending = make_submission(data_dir, store)
    report = sweep(data_dir, store, service_key=service.verify_key,
                   now=Clock(T0 + 8 * DAY))
    assert report.outbox.purged == 1
    assert store.outbox_row(old).state == "purged" and not (data_dir / OUTBOX / old).exists()
    assert store.outbox_row(recent).state == "acknowledged"
    assert (data_dir / OUTBOX / recent).is_dir() and (data_dir / OUTBOX / pending).is_dir()


def test_an_acknowledged_submission_whose_folder_vanished_is_kept_acknowledged(
        data_dir, store, service) -> None:
    # A crash between the folder's deletion and the row's "purged".
    outbox = StoreOutbox(data_dir, store, now=Clock())
    sid = make_submission(data_dir, store)
    acknowledge(outbox, store, sid, service)
    shutil.rmtree(data_dir / OUTBOX / sid)
    report = sweep(data_dir, store, service_key=service.verify_key, now=Clock(T0 + DAY))
    assert report.outbox.missing == 0
    assert store.outbox_row(sid).state == "acknowledged"  # its receipt and rows stay
    reconcile_outbox(data_dir, store, service_key=service.verify_key,
                     now=Clock(T0 + 8 * DAY))
    assert store.outbox_row(sid).state == "purged"


def test_a_purged_submission_whose_folder_is_back_loses_it(data_dir, store, service) -> None:
    outbox = StoreOutbox(data_dir, store, now=Clock())
    sid = make_submission(data_dir, store)
    acknowledge(outbox, store, sid, service)
    outbox.purge_due(retention_days=0, service_key=service.verify_key)
    folder = data_dir / OUTBOX / sid
    folder.mkdir()  # a restored backup
    (folder / "q1-1.age").write_bytes(b"x")
    report = sweep(data_dir, store)
    assert report.outbox.purged_folders == 1 and not folder.exists()
    assert store.outbox_row(sid).state == "purged"


def test_a_submitted_submission_without_a_row_enters_sealed(data_dir, store) -> None:
    sid = make_submission(data_dir, store)
    store.db.execute("delete from outbox where submission_id = ?", [sid])
    report = sweep(data_dir, store)
    assert report.outbox.adopted == 1 and store.outbox_row(sid).state == "sealed"
    assert (data_dir / OUTBOX / sid / "manifest.json.age").exists()


def test_nothing_acknowledged_is_lost_and_nothing_unacknowledged_purged(
        data_dir, store, service) -> None:
    """Every state at once, a long time later: only what the rules name changes."""
    outbox = StoreOutbox(data_dir, store, now=Clock())
    sids = {s: make_submission(data_dir, store) for s in
            ("sealed", "uploading", "finalizing", "acknowledged", "rejected")}
    outbox.start_uploading(sids["uploading"])
    outbox.start_uploading(sids["finalizing"])
    outbox.uploaded(sids["finalizing"], "0" * 64)
    acknowledge(outbox, store, sids["acknowledged"], service)
    outbox.reject(sids["rejected"], "index_conflict")
    before = {s: hashlib.sha256(b"".join(p.read_bytes() for p in sorted(
        (data_dir / OUTBOX / sid).iterdir()))).hexdigest() for s, sid in sids.items()}
    sweep(data_dir, store, service_key=service.verify_key, now=Clock(T0 + 365 * DAY))
    for state, sid in sids.items():
        row = store.outbox_row(sid)
        if state == "acknowledged":
            assert row.state == "purged" and row.receipt is not None
            continue
        assert row.state == state
        after = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(
            (data_dir / OUTBOX / sid).iterdir()))).hexdigest()
        assert after == before[state]


def test_wipe_keeps_what_the_service_acknowledged(data_dir, store, service) -> None:
    outbox = StoreOutbox(data_dir, store, now=Clock())
    acked = make_submission(data_dir, store)
    acknowledge(outbox, store, acked, service)
    rejected = make_submission(data_dir, store)
    outbox.reject(rejected, "index_conflict")
    sealed = make_submission(data_dir, store)
    report = wipe_unsent(data_dir, store)
    assert (report.submissions, report.kept) == (2, 1)
    assert store.outbox_row(acked).state == "acknowledged"
    assert (data_dir / OUTBOX / acked).is_dir()
    for sid in (rejected, sealed):
        assert store.outbox_row(sid) is None and not (data_dir / OUTBOX / sid).exists()
