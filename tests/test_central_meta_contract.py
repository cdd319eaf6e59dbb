"""The MetaStore contract, run on every store: SQLite (the default) and PostgreSQL.

One parametrized fixture, ``backend``, gives each test function a fresh store of each
kind; the test bodies are shared, never copied. The PostgreSQL store runs against a
private PostgreSQL 15 cluster (tests/harness/postgres.py), with fsync on. What only
PostgreSQL can promise (locks across processes, surviving a server restart) is at the
end, on the ``pg_backend`` fixture.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sync.central.storage.audit_chain import first_broken
from sync.central.storage.base import (
    AuditEvent,
    Conflict,
    MetaStore,
    StaleCatalog,
    StorageUnavailable,
    StoredCatalog,
    StoredPart,
    StoredSubmission,
    Upload,
)
from sync.central.storage.pg_meta import PostgresMetaStore
from sync.central.storage.sqlite_meta import SCHEMA_VERSION, SqliteMetaStore
from tests.harness.central import REPO, new_submission_id
from tests.harness.postgres import PostgresCluster

# The private cluster's fixtures, here until tests/conftest.py takes them for every file.

DEVICE = "dev-0123456789abcdef"
NOW = 1_800_000_000.0


@dataclass
class Backend:
    """Where one store lives; ``open()`` gives another store on the same data, as a
    second ``central`` process or service instance would have."""

    kind: str
    target: str
    opened: list[MetaStore]

    def open(self, *, create: bool = False) -> MetaStore:
        store: MetaStore
        if self.kind == "sqlite":
            store = SqliteMetaStore(Path(self.target), create=create)
        else:
            store = PostgresMetaStore(self.target, create=create)
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        target = str(tmp_path / "central.sqlite")
    else:
        target = request.getfixturevalue("postgres_dsn")
    made = Backend(request.param, target, [])
    try:
        yield made
    finally:
        for store in made.opened:
            store.close()


@pytest.fixture
def meta(backend: Backend) -> MetaStore:
    return backend.open(create=True)


@pytest.fixture
def pg_backend(postgres_dsn: str) -> Iterator[Backend]:
    """PostgreSQL alone, for what only it has (SQLite's store is one process by
    design): locks across processes, a server restart."""
    made = Backend("postgres", postgres_dsn, [])
    try:
        yield made
    finally:
        for store in made.opened:
            store.close()


# -- helpers ------------------------------------------------------------------------------

def ev(action: str, subject: str) -> AuditEvent:
    return AuditEvent("test", action, subject)


def submission(sid: str, *, index: bytes = b"index", key: str | None = None,
               state: str = "received", parts: int = 2) -> StoredSubmission:
    return StoredSubmission(
        sid, DEVICE, index, "idrsig1index", state, f"2026-01-01T00:00:{len(sid) % 60:02d}Z",
        b"receipt\x00\xff" + sid.encode(), "idrsig1receipt",
        tuple(StoredPart(f"{n}.age", 10 + n, f"{n:x}" * 64) for n in range(parts)),
        withdrawal_key=key)


def upload(uid: str, *, length: int = 100, part: str = "a.age",
           sid: str = "sub") -> Upload:
    return Upload(uid, DEVICE, sid, part, length, 0, NOW, NOW + 3600, None, None)


def race(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in n threads released together; results (or exceptions) by i."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # collected, asserted on by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def audit_actions(store: MetaStore) -> list[tuple[str, str]]:
    return [(r.action, r.subject) for r in store.audit_rows()]


# -- schema and meta -----------------------------------------------------------------------

def test_schema_version_and_meta(backend: Backend, meta: MetaStore) -> None:
    assert meta.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert meta.get_meta("nothing") is None
    meta.set_meta("k", "one")
    meta.set_meta("k", "two", audit=ev("meta_set", "k"))
    assert meta.get_meta("k") == "two"
    assert audit_actions(meta) == [("meta_set", "k")]
    # Opening again (as `central init` twice, or a second instance) keeps the data.
    again = backend.open(create=True)
    assert again.get_meta("k") == "two"
    assert backend.open().get_meta("schema_version") == str(SCHEMA_VERSION)


def test_one_schema_for_both_stores(tmp_path: Path, postgres_dsn: str) -> None:
    """The same tables and columns on both (PostgreSQL adds only SQLite's implicit rowid
    as public_audio.added, and the S3 store's upload ledger, which lives beside the
    uploads it describes)."""
    import sqlite3

    SqliteMetaStore(tmp_path / "s.sqlite", create=True).close()
    PostgresMetaStore(postgres_dsn, create=True).close()
    conn = sqlite3.connect(tmp_path / "s.sqlite")
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    lite = {(t, r[1]) for t in tables for r in conn.execute(f"PRAGMA table_info({t})")}
    lite_indexes = {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='index' AND sql IS NOT NULL")}
    conn.close()
    with psycopg.connect(postgres_dsn) as pg:
        cols = {(t, c) for t, c in pg.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public'")}
        pg_indexes = {r[0] for r in pg.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'"
            " AND indexname NOT LIKE '%_pkey'")}
    ledger = {(t, c) for t, c in cols
              if t in ("upload_blobs", "upload_blob_parts", "upload_tails")}
    assert ledger and cols - ledger - {("public_audio", "added")} == lite
    # Alembic names its version table's primary key "_pkc" on PostgreSQL.
    assert pg_indexes - {"alembic_version_pkc"} == lite_indexes


# -- enrolment, devices, tokens, heartbeats ---------------------------------------------------

def test_an_enrolment_code_works_once_and_not_after_it_expires(meta: MetaStore) -> None:
    row = meta.add_enrol_code("h-code", "Front desk", NOW, NOW + 60,
                              audit=ev("enrol_code_made", "x"))
    assert row >= 1
    with pytest.raises(Conflict):
        meta.add_enrol_code("h-code", None, NOW, NOW + 60)
    assert not meta.enrol_device("h-wrong", NOW + 1, "dev-a", "pk-a", "t-a")
    assert meta.enrol_device("h-code", NOW + 1, "dev-a", "pk-a", "t-a",
                             audit=ev("device_enrolled", "dev-a"))
    assert not meta.enrol_device("h-code", NOW + 2, "dev-b", "pk-b", "t-b")
    meta.add_enrol_code("h-old", None, NOW, NOW + 60)
    assert not meta.enrol_device("h-old", NOW + 60, "dev-c", "pk-c", "t-c")
    assert [d.id for d in meta.list_devices()] == ["dev-a"]
    device = meta.get_device("dev-a")
    assert device is not None and device.name == "Front desk" and device.public_key == "pk-a"
    assert meta.device_by_token("t-a") == device and meta.device_by_token("t-b") is None
    # The audit names the code by its row, never by the code or the device's name.
    assert audit_actions(meta) == [("enrol_code_made", f"code-{row}"),
                                   ("device_enrolled", "dev-a")]


def test_two_enrolments_racing_with_one_code_one_wins(meta: MetaStore) -> None:
    for round_ in range(5):
        meta.add_enrol_code(f"h-{round_}", None, NOW, NOW + 60)
        won = race(4, lambda i, r=round_: meta.enrol_device(
            f"h-{r}", NOW + 1, f"dev-{r}-{i}", "pk", f"tok-{r}-{i}"))
        assert sorted(won, key=str) == [False, False, False, True], won
    assert len(meta.list_devices()) == 5


def test_revocation_and_heartbeats(meta: MetaStore) -> None:
    meta.add_enrol_code("h", None, NOW, NOW + 60)
    assert meta.enrol_device("h", NOW, "dev-a", "pk", "tok")
    meta.record_heartbeat("dev-a", NOW + 5, 3, 2**40, "1.2.3", None)
    meta.record_heartbeat("dev-a", NOW + 9, 0, None, "1.2.4", "disk_full")
    device = meta.get_device("dev-a")
    assert device is not None
    assert (device.last_heartbeat_at, device.queue_depth, device.free_disk_bytes,
            device.app_version, device.last_error) == (NOW + 9, 0, None, "1.2.4", "disk_full")
    assert meta.revoke_device("dev-a", NOW + 10, audit=ev("device_revoked", "dev-a"))
    assert meta.revoke_device("dev-a", NOW + 20)  # again: the first time is kept
    assert not meta.revoke_device("dev-none", NOW, audit=ev("device_revoked", "dev-none"))
    revoked = meta.device_by_token("tok")
    assert revoked is not None and revoked.revoked_at == NOW + 10
    assert audit_actions(meta) == [("device_revoked", "dev-a")]


def test_vetters_and_administrators(meta: MetaStore) -> None:
    meta.add_vetter("vet-1", "Alice", "vt-1", NOW, audit=ev("vetter_added", "vet-1"))
    with pytest.raises(Conflict):
        meta.add_vetter("vet-1", "Alice again", "vt-2", NOW, audit=ev("vetter_added", "x"))
    with pytest.raises(Conflict):
        meta.add_vetter("vet-2", "Token reuse", "vt-1", NOW)
    vetter = meta.vetter_by_token("vt-1")
    assert vetter is not None and (vetter.id, vetter.name) == ("vet-1", "Alice")
    assert meta.vetter_by_token("vt-2") is None
    meta.add_admin("adm-1", "Bo", "at-1", NOW)
    with pytest.raises(Conflict):
        meta.add_admin("adm-1", "Bo", "at-9", NOW)
    assert meta.revoke_admin("adm-1", NOW + 1, audit=ev("admin_revoked", "adm-1"))
    assert not meta.revoke_admin("adm-2", NOW + 1)
    admin = meta.admin_by_token("at-1")
    assert admin is not None and admin.revoked_at == NOW + 1
    # A refused insert leaves no audit line behind (same transaction).
    assert audit_actions(meta) == [("vetter_added", "vet-1"), ("admin_revoked", "adm-1")]


# -- uploads ----------------------------------------------------------------------------------

def test_upload_lifecycle(meta: MetaStore) -> None:
    meta.create_upload(upload("u1", length=3 * 2**40), audit=ev("upload_created", "u1"))
    with pytest.raises(Conflict):
        meta.create_upload(upload("u1"), audit=ev("upload_created", "u1"))
    meta.create_upload(upload("u2", part="b.age"))
    assert [u.id for u in meta.list_uploads()] == ["u1", "u2"]
    meta.set_upload_offset("u1", 2**40 + 7)  # past 32 bits: BIGINT, not INTEGER
    got = meta.get_upload("u1")
    assert got is not None and got.offset == 2**40 + 7 and got.finished_at is None
    assert meta.finished_upload_for(DEVICE, "sub", "b.age", 100, "d" * 64) is None
    meta.set_upload_offset("u2", 100)
    meta.finish_upload("u2", "d" * 64, NOW + 1, audit=ev("upload_finished", "u2"))
    found = meta.finished_upload_for(DEVICE, "sub", "b.age", 100, "d" * 64)
    assert found is not None and found.id == "u2" and found.finished_at == NOW + 1
    for other in ((DEVICE, "sub", "b.age", 99, "d" * 64), (DEVICE, "sub", "b.age", 100, "e" * 64),
                  ("dev-other", "sub", "b.age", 100, "d" * 64),
                  (DEVICE, "sub2", "b.age", 100, "d" * 64)):
        assert meta.finished_upload_for(*other) is None, other
    meta.reset_upload("u2")
    reset = meta.get_upload("u2")
    assert reset is not None and (reset.offset, reset.finished_at, reset.sha256) == (0, None,
                                                                                     None)
    assert meta.delete_upload("u1", audit=ev("upload_terminated", "u1"))
    assert not meta.delete_upload("u1", audit=ev("upload_terminated", "u1"))
    assert meta.get_upload("u1") is None
    assert audit_actions(meta) == [("upload_created", "u1"), ("upload_finished", "u2"),
                                   ("upload_terminated", "u1")]


def test_an_upload_offset_never_goes_backwards(meta: MetaStore) -> None:
    meta.create_upload(upload("u1"))
    meta.set_upload_offset("u1", 40)
    meta.set_upload_offset("u1", 10)  # a late writer: ignored
    got = meta.get_upload("u1")
    assert got is not None and got.offset == 40
    meta.reset_upload("u1")  # reconciliation's explicit reset is the one way back
    got = meta.get_upload("u1")
    assert got is not None and got.offset == 0


def test_an_upload_lock_is_refused_while_held(meta: MetaStore) -> None:
    assert meta.try_lock_upload("u1")
    assert not meta.try_lock_upload("u1")
    assert meta.try_lock_upload("u2")  # another upload is another lock
    got = race(4, lambda _: meta.try_lock_upload("u3"))
    assert sorted(got) == [False, False, False, True]
    meta.unlock_upload("u1")
    meta.unlock_upload("u1")  # twice: harmless
    assert meta.try_lock_upload("u1")
    for uid in ("u1", "u2", "u3"):
        meta.unlock_upload(uid)


# -- submissions ----------------------------------------------------------------------------

def test_submissions_are_stored_exactly_once(meta: MetaStore) -> None:
    sid = new_submission_id()
    first = submission(sid, index=b"\x00one\xff", key="wk-1")
    meta.insert_submission(first, audit=ev("submission_received", sid))
    with pytest.raises(Conflict):
        meta.insert_submission(submission(sid, index=b"two", parts=3),
                               audit=ev("submission_received", sid))
    assert meta.get_submission(sid) == first
    assert meta.get_submission(new_submission_id()) is None
    assert audit_actions(meta) == [("submission_received", sid)]


def test_two_inserts_racing_on_one_id_one_wins(backend: Backend, meta: MetaStore) -> None:
    other = backend.open()  # a second instance on the same data, besides threads
    stores = [meta, other]
    for _ in range(10):
        sid = new_submission_id()
        got = race(4, lambda i, s=sid: stores[i % 2].insert_submission(
            submission(s, index=f"from {i}".encode(), parts=1 + i),
            audit=ev("submission_received", s)))
        assert sum(r is None for r in got) == 1, got
        assert all(isinstance(r, Conflict) for r in got if r is not None), got
        winner = got.index(None)
        stored = other.get_submission(sid)
        assert stored is not None and stored.index == f"from {winner}".encode()
        assert len(stored.parts) == 1 + winner  # no part of a loser was kept
    assert len(meta.list_submissions()) == 10
    assert len(list(meta.audit_rows())) == 10


def test_listing_state_changes_and_story_ids(meta: MetaStore) -> None:
    a, b, c = (new_submission_id() for _ in range(3))
    for sid in (a, b, c):
        meta.insert_submission(submission(sid))
    assert [s.id for s in meta.list_submissions()] == sorted([a, b, c])
    assert meta.set_submission_state(a, "received", "published", "ok", "story-1", NOW,
                                     audit=ev("decided", a))
    assert not meta.set_submission_state(a, "received", "rejected", "no", None, NOW,
                                         audit=ev("decided", a))
    assert not meta.set_submission_state("nope", "received", "rejected", None, None, NOW)
    with pytest.raises(Conflict):
        meta.set_submission_state(b, "received", "published", "ok", "story-1", NOW,
                                  audit=ev("decided", b))
    stored = meta.get_submission(a)
    assert stored is not None
    assert (stored.state, stored.reason, stored.story_id, stored.state_changed_at) == (
        "published", "ok", "story-1", NOW)
    assert [s.id for s in meta.list_submissions("received")] == sorted([b, c])
    assert [s.id for s in meta.list_submissions("published")] == [a]
    assert audit_actions(meta) == [("decided", a)]
    # Two vetters deciding at once: the compare-and-set lets exactly one through.
    got = race(4, lambda i: meta.set_submission_state(c, "received", f"s{i}", None, None,
                                                      NOW))
    assert sorted(got) == [False, False, False, True]


def test_withdrawal(meta: MetaStore) -> None:
    a, b, c = (new_submission_id() for _ in range(3))
    meta.insert_submission(submission(a, key="wk"))
    meta.insert_submission(submission(b, key="wk"))
    meta.insert_submission(submission(c, key="other"))
    assert meta.set_submission_state(a, "received", "published", None, "story-a", NOW)
    assert meta.withdraw("wk", NOW + 1, actor="kiosk") == (2, sorted([a, b]))
    assert meta.withdraw("wk", NOW + 2, actor="kiosk") == (2, [])
    assert meta.withdraw("none", NOW, actor="kiosk") == (0, [])
    assert audit_actions(meta) == [("submission_withdrawn", s) for s in sorted([a, b])]
    assert meta.withdrawn_story_ids(["story-a", "story-x", "story-a"]) == {"story-a"}
    assert meta.withdrawn_story_ids([]) == set()
    stored = meta.get_submission(a)
    assert stored is not None and stored.state == "withdrawn" and stored.story_id == "story-a"


# -- public audio and catalogs ----------------------------------------------------------------

def test_public_audio(meta: MetaStore) -> None:
    assert meta.latest_public_audio("s1") is None
    assert meta.add_public_audio("s1", "a" * 64, 1000, NOW, audit=ev("audio_stored", "s1"))
    assert not meta.add_public_audio("s1", "a" * 64, 1000, NOW,
                                      audit=ev("audio_stored", "s1"))
    # Stored within one clock tick: the one stored last is the newest.
    assert meta.add_public_audio("s1", "b" * 64, 2000, NOW)
    assert meta.public_audio_size("s1", "a" * 64) == 1000
    assert meta.public_audio_size("s2", "a" * 64) is None
    assert meta.latest_public_audio("s1") == ("b" * 64, 2000)
    assert audit_actions(meta) == [("audio_stored", "s1")]


def catalog(version: int) -> StoredCatalog:
    data = f'{{"version": {version}}}\x00'.encode()
    return StoredCatalog(version, data, f"sig{version}", f"{version:064x}", NOW + version)


def test_catalogs_only_move_forward(meta: MetaStore) -> None:
    assert meta.latest_catalog() is None
    meta.put_catalog(catalog(1), audit=ev("catalog_published", "1"))
    meta.put_catalog(catalog(5))
    for stale in (5, 4, 1):
        with pytest.raises(StaleCatalog):
            meta.put_catalog(catalog(stale), audit=ev("catalog_published", str(stale)))
    assert meta.latest_catalog() == catalog(5)
    bare = meta.latest_catalog(with_data=False)
    assert bare is not None and bare.data == b"" and bare.version == 5
    assert audit_actions(meta) == [("catalog_published", "1")]


def test_racing_catalogs_are_stored_in_increasing_order(backend: Backend,
                                                       meta: MetaStore) -> None:
    stores = [meta, backend.open()]
    versions = [3, 1, 4, 2, 8, 6, 7, 5] * 2

    def put(i: int) -> None:
        v = versions[i]
        stores[i % 2].put_catalog(catalog(v), audit=ev("catalog_published", str(v)))

    got = race(len(versions), put)
    assert all(r is None or isinstance(r, StaleCatalog) for r in got), got
    stored = [int(subject) for _, subject in audit_actions(meta)]
    # Whatever order they came in, each stored version was newer than all before it.
    assert stored == sorted(set(stored)) and stored[-1] == 8
    assert sum(r is None for r in got) == len(stored)


# -- audit ---------------------------------------------------------------------------------

def test_the_audit_chain_stays_linear_under_concurrent_writers(backend: Backend,
                                                              meta: MetaStore) -> None:
    stores = [meta, backend.open(), backend.open()]
    per_thread = 15

    def write(i: int) -> None:
        store = stores[i % len(stores)]
        for n in range(per_thread):
            # Mixed writers: plain appends and changes that carry their audit line.
            if n % 3 == 0:
                store.create_upload(upload(f"u{i}-{n}"), audit=ev("upload_created",
                                                                  f"u{i}-{n}"))
            elif n % 3 == 1:
                store.set_meta(f"k{i}", str(n), audit=ev("meta_set", f"k{i}"))
            else:
                store.append_audit(ev("queue_listed", f"t{i}-{n}"))

    threads = 6
    assert race(threads, write) == [None] * threads
    rows = list(meta.audit_rows())
    assert first_broken(rows) == (threads * per_thread, None)
    assert [r.seq for r in rows] == list(range(1, threads * per_thread + 1))
    assert meta.get_meta("audit_head") == f"{rows[-1].seq}:{rows[-1].hash}"


# -- PostgreSQL only: locks across processes, restarts ------------------------------------------

LOCKER = """
import sys, time
from sync.central.storage.pg_meta import PostgresMetaStore
store = PostgresMetaStore(sys.argv[1])
print("locked" if store.try_lock_upload(sys.argv[2]) else "refused", flush=True)
time.sleep(120)
"""


def _locker(dsn: str, upload_id: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-c", LOCKER, dsn, upload_id], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _ask_another_process(dsn: str, upload_id: str) -> str:
    proc, said = _locker(dsn, upload_id)
    proc.kill()
    proc.wait(10)
    return said


def test_a_lock_held_by_a_dead_process_is_released_by_the_database(
        pg_backend: Backend) -> None:
    backend = pg_backend
    meta = backend.open(create=True)
    proc, said = _locker(backend.target, "u1")
    try:
        assert said == "locked"
        assert not meta.try_lock_upload("u1")
        assert meta.try_lock_upload("u2")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # No timeout guess: the server ends the dead client's session at once.
        deadline = time.monotonic() + 5
        while not meta.try_lock_upload("u1"):
            assert time.monotonic() < deadline, "the dead process's lock was never released"
            time.sleep(0.02)
        # And the other way round: this process holds u1 and u2, another is refused.
        other, said = _locker(backend.target, "u1")
        other.kill()
        other.wait(10)
        assert said == "refused"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        meta.unlock_upload("u1")
        meta.unlock_upload("u2")


def test_the_store_outlives_a_postgresql_restart(pg_backend: Backend,
                                                 postgres_cluster: PostgresCluster) -> None:
    meta = pg_backend.open(create=True)
    meta.create_upload(upload("u1"), audit=ev("upload_created", "u1"))
    meta.set_upload_offset("u1", 64)
    assert meta.try_lock_upload("u1")
    # Immediate shutdown: no checkpoint, so the committed rows come back by WAL replay.
    postgres_cluster.restart(crash=True)
    # The server forgot the lock; its holder here may still be writing: still refused.
    assert not meta.try_lock_upload("u1")
    meta.unlock_upload("u1")  # its session died with the server: no error, and no lock
    got = meta.get_upload("u1")
    assert got is not None and got.offset == 64
    assert meta.try_lock_upload("u1")
    meta.set_upload_offset("u1", 80)
    meta.unlock_upload("u1")
    assert first_broken(meta.audit_rows()) == (1, None)


def test_a_database_that_is_down_is_unavailable_not_locked(
        pg_backend: Backend, postgres_cluster: PostgresCluster) -> None:
    """"Locked" tells a kiosk to retry at once; a database that is down must be told
    apart (StorageUnavailable: 503 with Retry-After). And any number of uploads can be
    locked at once by one process (one lock session), none of them by another."""
    meta = pg_backend.open(create=True)
    assert isinstance(meta, PostgresMetaStore)
    held = [f"many{i}" for i in range(200)]
    try:
        for upload_id in held:
            assert meta.try_lock_upload(upload_id)
        for upload_id in held[::50]:
            assert not meta.try_lock_upload(upload_id)  # held here
            assert _ask_another_process(pg_backend.target, upload_id) == "refused"
    finally:
        for upload_id in held:
            meta.unlock_upload(upload_id)
    assert _ask_another_process(pg_backend.target, held[0]) == "locked"  # released
    postgres_cluster.stop()
    try:
        with pytest.raises(StorageUnavailable):
            meta.try_lock_upload("u1")
    finally:
        postgres_cluster.start()
    deadline = time.monotonic() + 10
    while True:  # the pool replaces its dead connections once the server is back
        try:
            assert meta.try_lock_upload("u1")
            break
        except StorageUnavailable:
            assert time.monotonic() < deadline, "locks never came back after the restart"
            time.sleep(0.1)
    meta.unlock_upload("u1")


# -- which store `central` opens -------------------------------------------------------------

def test_central_uses_postgres_when_a_database_url_is_configured(
        tmp_path: Path, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sync.central.core import CONFIG_NAME, DATABASE_URL, DB_NAME, Central, init
    from sync.central.core import NotInitialised as NotInit

    data = tmp_path / "c"
    monkeypatch.setenv(DATABASE_URL, postgres_dsn)
    init(data)
    data_only = tmp_path / "empty"
    init(data_only)  # the same database: init twice keeps what is there
    svc = Central(data)
    try:
        assert isinstance(svc.meta, PostgresMetaStore) and not (data / DB_NAME).exists()
        svc.meta.set_meta("probe", "from env")
    finally:
        svc.close()
    # The same key in the data directory's config file, with the environment empty.
    monkeypatch.delenv(DATABASE_URL)
    (data / CONFIG_NAME).write_text(f"# metadata store\n{DATABASE_URL} = {postgres_dsn}\n")
    svc = Central(data)
    try:
        assert svc.meta.get_meta("probe") == "from env"
    finally:
        svc.close()
    # Every CLI command reads it too; the code lands in PostgreSQL.
    done = subprocess.run([sys.executable, "-m", "sync.central", "enrol-code", "--data",
                           str(data)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT COUNT(*) FROM enrol_codes").fetchone() == (1,)
    # `central backup` works on it too (tests/test_central_backup_stores.py restores it).
    done = subprocess.run([sys.executable, "-m", "sync.central", "backup", "--data",
                           str(data), str(tmp_path / "bk")], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "bk" / "central.sqlite").is_file()
    # A database `central init` never prepared is refused, not silently set up.
    params = psycopg.conninfo.conninfo_to_dict(postgres_dsn)
    bare = f"postgresql://{params['user']}@/postgres?host={params['host']}&port={params['port']}"
    (data / CONFIG_NAME).write_text(f"{DATABASE_URL}={bare}\n")
    with pytest.raises(NotInit):
        Central(data)
    # A database that does not exist fails at once, with the reason, not after retries.
    (data / CONFIG_NAME).write_text(f"{DATABASE_URL}={bare.replace('/postgres?', '/no?')}\n")
    began = time.monotonic()
    with pytest.raises(NotInit, match='database "no" does not exist'):
        Central(data)
    assert time.monotonic() - began < 5


def test_without_a_database_url_central_stays_on_sqlite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sync.central.core import DATABASE_URL, DB_NAME, Central, init

    monkeypatch.delenv(DATABASE_URL, raising=False)
    init(tmp_path / "c")
    svc = Central(tmp_path / "c")
    try:
        assert isinstance(svc.meta, SqliteMetaStore) and (tmp_path / "c" / DB_NAME).is_file()
    finally:
        svc.close()
