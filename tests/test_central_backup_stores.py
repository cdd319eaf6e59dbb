"""`central backup` and `central restore` across stores (issue 14): a backup of PostgreSQL +
S3 made while a real `central serve` takes uploads, restored into a fresh database and
bucket and into the one-directory default; the default restored into PostgreSQL + S3
(the administrator's migration); a damaged backup, or a target that holds data, refused
with nothing written to PostgreSQL or S3; a restore cut between its blobs and its rows,
then run again.

Each test names its stores itself (a central.conf written before the service starts), so
they run the same under any ``--central-store``.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from sync.central.backup import BackupError
from sync.central.restore_postgres import restore_postgres
from sync.central.storage.snapshot import database_rows
from sync.wire import encode_metadata
from tests.harness import central as central_harness
from tests.harness.central import (
    CentralService,
    index_body,
    new_submission_id,
    signed_index,
    tus_headers,
    tus_upload,
)
from tests.harness.postgres import PostgresCluster
from tests.harness.s3 import S3Endpoint, s3_endpoint  # noqa: F401  (fixture)
from tests.test_central_backup import (
    TAMPERS,
    World,
    _run,
    _served,
    _world,
    backup_while,
    submitting,
)

#: A finished upload this big becomes two multipart parts when restored into S3
#: (s3_blobs.PART is 8 MiB), so the restore's multipart path is exercised whole.
BIG = 9 * 1024 * 1024


@dataclass
class Store:
    """Where one data directory keeps its metadata and blobs."""

    data_dir: Path
    dsn: str | None = None
    bucket: str | None = None
    prefix: str = ""


def _pg_s3(data_dir: Path, cluster: PostgresCluster, endpoint: S3Endpoint,
           prefix: str = "") -> Store:
    """A data directory holding only a central.conf that names a fresh database and a
    fresh bucket, as an administrator writes it before `central init` or a restore."""
    dsn = cluster.new_database()
    bucket = f"restore-{uuid.uuid4().hex[:16]}"
    endpoint.admin_client().create_bucket(Bucket=bucket)
    lines = {"CENTRAL_DATABASE_URL": dsn, "CENTRAL_S3_ENDPOINT": endpoint.endpoint_url,
             "CENTRAL_S3_BUCKET": bucket, "AWS_ACCESS_KEY_ID": endpoint.access_key_id,
             "AWS_SECRET_ACCESS_KEY": endpoint.secret_access_key,
             "AWS_DEFAULT_REGION": endpoint.region}
    if prefix:
        lines["CENTRAL_S3_PREFIX"] = prefix
    data_dir.mkdir(parents=True)
    (data_dir / "central.conf").write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    return Store(data_dir, dsn, bucket, prefix)


def _tables(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = 'public' ORDER BY 1")]


def _objects(endpoint: S3Endpoint, bucket: str) -> list[str]:
    """Every key in the bucket, and every multipart upload in progress in it."""
    client = endpoint.admin_client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    pending = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sorted(keys) + [f"multipart:{u['Key']}" for u in pending]


def _untouched(store: Store, endpoint: S3Endpoint, before: list[str] | None = None) -> None:
    """Nothing was written: no table in the database, the bucket as it was, the data
    directory holding its central.conf alone."""
    assert store.dsn is not None and store.bucket is not None
    assert _tables(store.dsn) == []
    assert _objects(endpoint, store.bucket) == (before or [])
    assert sorted(p.name for p in store.data_dir.iterdir()) == ["central.conf"]


def _audit_verify(data_dir: Path) -> str:
    done = _run("audit", "verify", "--data", str(data_dir))
    assert done.returncode == 0 and done.stdout.startswith("audit chain intact"), \
        done.stdout + done.stderr
    return done.stdout.strip()


@dataclass
class Extras:
    """Uploads a kiosk had in flight when the backup was made."""

    growing_sid: str
    growing: bytes
    location: str
    pending_sid: str
    pending: bytes


def _in_flight(world: World) -> Extras:
    """An upload still growing, and a finished one (9 MiB) whose index is not posted."""
    with world.client() as client:
        growing_sid, growing = new_submission_id(), secrets.token_bytes(3000)
        created = client.post("/api/v1/uploads/", headers=tus_headers(world.token, **{
            "Upload-Length": "3000", "Upload-Metadata": encode_metadata(
                {"submission_id": growing_sid, "part": "a1.age"})}))
        assert created.status_code == 201, created.text
        location = created.headers["location"]
        assert client.patch(location, content=growing[:1000], headers=tus_headers(
            world.token, **{"Content-Type": "application/offset+octet-stream",
                            "Upload-Offset": "0"})).status_code == 204
        pending_sid, pending = new_submission_id(), secrets.token_bytes(BIG)
        tus_upload(client, world.token, pending_sid, "a1.age", pending,
                   chunk=3 * 1024 * 1024)
    return Extras(growing_sid, growing, location, pending_sid, pending)


def _kiosk_carries_on(world: World, url: str, extras: Extras) -> None:
    """On a restored service: the growing upload starts again from 0, the finished one's
    index is accepted (its body was restored), and a new device can enrol."""
    dev = tus_headers(world.token)
    with httpx.Client(base_url=url, timeout=60) as client:
        head = client.head(extras.location, headers=dev)
        assert head.status_code == 200 and head.headers["upload-offset"] == "0"
        patch = client.patch(extras.location, content=extras.growing, headers={
            **dev, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
        assert patch.status_code == 204, patch.text
        vet = {"Authorization": f"Bearer {world.vetter}"}
        for sid, data in ((extras.growing_sid, extras.growing),
                          (extras.pending_sid, extras.pending)):
            reply = client.post("/api/v1/submissions", json=index_body(signed_index(
                world.key, world.device_id, sid, {"a1.age": data})),
                headers={"Authorization": f"Bearer {world.token}"})
            assert reply.status_code == 201, reply.text
            part = client.get(f"/api/v1/submissions/{sid}/parts/a1.age", headers=vet)
            assert part.status_code == 200 and part.content == data


@dataclass
class PgWorld:
    service: CentralService
    store: Store
    world: World
    sids: list[str]
    extras: Extras


@pytest.fixture(scope="module")
def pg_world(tmp_path_factory: pytest.TempPathFactory, postgres_cluster: PostgresCluster,
             s3_endpoint: S3Endpoint) -> Iterator[PgWorld]:  # noqa: F811
    """A running service on PostgreSQL + S3 with a vetter, a kiosk, submissions (one in
    review), two stories' audio, a signed catalog and two uploads in flight."""
    root = tmp_path_factory.mktemp("pgworld")
    store = _pg_s3(root / "central", postgres_cluster, s3_endpoint)
    service = CentralService(store.data_dir)
    try:
        world, sids = _world(service, submissions=3)
        yield PgWorld(service, store, world, sids, _in_flight(world))
    finally:
        service.stop()


@pytest.fixture(scope="module")
def pg_backup(pg_world: PgWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A backup of the PostgreSQL + S3 service (made by the CLI)."""
    target = tmp_path_factory.mktemp("pgbackup") / "backup"
    pg_world.service.cli("backup", str(target))
    return target


@pytest.fixture(autouse=True)
def _own_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    # These tests write each data directory's central.conf themselves: a default-store
    # service must stay on the default whatever --central-store says.
    monkeypatch.setattr(central_harness, "DATABASE_FACTORY", None)
    monkeypatch.setattr(central_harness, "S3_FACTORY", None)


def test_backup_on_postgres_s3_while_uploading_restores_into_either_store(
        pg_world: PgWorld, tmp_path: Path, postgres_cluster: PostgresCluster,
        s3_endpoint: S3Endpoint) -> None:  # noqa: F811
    started = time.monotonic()
    service, world = pg_world.service, pg_world.world
    assert _audit_verify(service.data_dir)  # the audit chain on PostgreSQL, live
    with submitting(world) as made:
        backup_dir, out = backup_while(service, made, tmp_path / "backup")
    assert out.strip().splitlines()[-1] == str(backup_dir)
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert manifest["source"] == "postgres+s3"
    # The growing one, and any the uploader thread had open at the snapshot.
    assert manifest["counts"]["uploads_restarted"] >= 1
    assert manifest["counts"]["uploads_finished"] >= 1  # the 9 MiB one
    assert manifest["counts"]["story_audio"] == 2

    # Into a fresh database and a fresh bucket (under a prefix).
    target = _pg_s3(tmp_path / "restored-pg", postgres_cluster, s3_endpoint, prefix="idr")
    done = _run("restore", "--data", str(target.data_dir), str(backup_dir))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == service.service_key
    assert "(postgres+s3, as configured)" in done.stdout
    _audit_verify(target.data_dir)
    # Into the one-directory default (PostgreSQL + S3 -> default).
    default = tmp_path / "restored-default"
    done = _run("restore", "--data", str(default), str(backup_dir))
    assert done.returncode == 0, done.stderr
    _audit_verify(default)

    original = _served(world, service.url)
    for data_dir in (target.data_dir, default):
        with CentralService(data_dir) as restored:
            assert restored.service_key == service.service_key
            served = _served(world, restored.url)
            ids = [s["id"] for s in served["queue"]]
            assert set(pg_world.sids) | set(made[:2]) <= set(ids)
            assert len(ids) < len(original["queue"])  # later uploads are not in it
            # The same queue (states, receipts, parts), part bytes, catalog byte for
            # byte with ETag and signature, and story audio.
            assert served == _served(world, service.url, ids)
            assert served["queue"][0]["state"] == "in_review"
            assert served["audio"] == world.stories
            _kiosk_carries_on(world, restored.url, pg_world.extras)
            restored.enrol_device("hall-b")  # enrolment codes' ids go on after the restored
        _audit_verify(data_dir)
    assert target.bucket is not None
    assert all(k.removeprefix("multipart:").startswith("idr/")
               for k in _objects(s3_endpoint, target.bucket))
    print(f"stores backup test: {len(made)} uploads during,"
          f" took {time.monotonic() - started:.1f}s")


def test_default_to_postgres_s3(tmp_path: Path, postgres_cluster: PostgresCluster,
                                         s3_endpoint: S3Endpoint) -> None:  # noqa: F811
    """The administrator's path: back the default up, restore with the new configuration."""
    with CentralService(tmp_path / "default") as old:
        world, _ = _world(old, submissions=2)
        extras = _in_flight(world)
        old.cli("backup", str(tmp_path / "backup"))
        before = _served(world, old.url)
    target = _pg_s3(tmp_path / "scaled", postgres_cluster, s3_endpoint)
    done = _run("restore", "--data", str(target.data_dir), str(tmp_path / "backup"))
    assert done.returncode == 0, done.stderr
    assert target.dsn is not None
    assert database_rows(target.dsn)["submissions"] == 2
    # The finished upload, as s3_blobs.py keeps one: a completed multipart of 2 parts.
    # (The other finished ones are the submissions' own uploads, not yet swept.)
    ledger = _pg_rows(target.dsn, "SELECT size, completed FROM upload_blobs ORDER BY size")
    assert ledger[0] == (0, False) and (BIG, True) in ledger
    assert all(completed for size, completed in ledger[1:])
    assert _pg_rows(target.dsn, "SELECT COUNT(*) FROM upload_blob_parts JOIN upload_blobs"
                                f" USING (upload_id) WHERE upload_blobs.size = {BIG}") == [(2,)]
    _audit_verify(target.data_dir)
    with CentralService(target.data_dir) as scaled:
        assert _served(world, scaled.url) == before
        _kiosk_carries_on(world, scaled.url, extras)
        assert len(_served(world, scaled.url)["queue"]) == len(before["queue"]) + 2
    # (PostgreSQL + S3 -> default: the first test.)


def _pg_rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.parametrize("tamper", ["a part's byte", "story audio", "the database",
                                    "a row without its file",
                                    "an audit row, manifest to match", "an extra file"])
def test_a_tampered_backup_writes_nothing_to_postgres_or_s3(
        tamper: str, pg_backup: Path, tmp_path: Path, postgres_cluster: PostgresCluster,
        s3_endpoint: S3Endpoint) -> None:  # noqa: F811
    change, message = TAMPERS[tamper]
    bad = tmp_path / "bad"
    shutil.copytree(pg_backup, bad)
    change(bad)
    target = _pg_s3(tmp_path / "target", postgres_cluster, s3_endpoint)
    done = _run("restore", "--data", str(target.data_dir), str(bad))
    assert done.returncode == 2, done.stdout
    assert message in done.stderr, done.stderr
    _untouched(target, s3_endpoint)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "target"]  # no staging


def test_a_target_holding_data_is_refused(pg_backup: Path, pg_world: PgWorld, tmp_path: Path,
                                          postgres_cluster: PostgresCluster,
                                          s3_endpoint: S3Endpoint) -> None:  # noqa: F811
    # A database with rows: the live service's own (with a fresh bucket).
    live = pg_world.store
    assert live.dsn is not None
    target = _pg_s3(tmp_path / "onto-live", postgres_cluster, s3_endpoint)
    (target.data_dir / "central.conf").write_text(
        (target.data_dir / "central.conf").read_text().replace(str(target.dsn), live.dsn))
    rows_before = database_rows(live.dsn)
    for force in ([], ["--force"]):
        done = _run("restore", *force, "--data", str(target.data_dir), str(pg_backup))
        assert done.returncode == 2, done.stdout
        assert "already holds rows" in done.stderr and "drop and recreate" in done.stderr
        assert "--force does not change that" in done.stderr
    assert target.bucket is not None
    assert _objects(s3_endpoint, target.bucket) == []
    assert database_rows(live.dsn) == rows_before
    # A bucket holding an object the backup does not name (a fresh database).
    other = _pg_s3(tmp_path / "onto-bucket", postgres_cluster, s3_endpoint)
    assert other.bucket is not None
    s3_endpoint.admin_client().put_object(Bucket=other.bucket, Key="parts/x", Body=b"x")
    done = _run("restore", "--force", "--data", str(other.data_dir), str(pg_backup))
    assert done.returncode == 2 and "already holds objects (first: parts/x)" in done.stderr
    _untouched(other, s3_endpoint, ["parts/x"])
    # A data directory holding another service key: only --force sets it aside.
    keyed = _pg_s3(tmp_path / "keyed", postgres_cluster, s3_endpoint)
    (keyed.data_dir / "service.key").write_text("another key\n")
    done = _run("restore", "--data", str(keyed.data_dir), str(pg_backup))
    assert done.returncode == 2 and "another service.key" in done.stderr
    assert "--force" in done.stderr
    assert keyed.dsn is not None and _tables(keyed.dsn) == []
    done = _run("restore", "--force", "--data", str(keyed.data_dir), str(pg_backup))
    assert done.returncode == 0, done.stderr
    kept = list(tmp_path.glob("keyed.replaced-*"))
    assert len(kept) == 1 and (kept[0] / "service.key").read_text() == "another key\n"
    assert str(kept[0]) in done.stdout
    assert (keyed.data_dir / "central.conf").read_text() == \
        (kept[0] / "central.conf").read_text()
    assert database_rows(keyed.dsn)["submissions"] >= len(pg_world.sids)


def test_a_restore_cut_before_its_rows_leaves_none_and_runs_again(
        pg_backup: Path, pg_world: PgWorld, tmp_path: Path,
        postgres_cluster: PostgresCluster, s3_endpoint: S3Endpoint) -> None:  # noqa: F811
    target = _pg_s3(tmp_path / "target", postgres_cluster, s3_endpoint)
    assert target.dsn is not None and target.bucket is not None

    class Cut(Exception):
        pass

    def cut() -> None:
        raise Cut  # as if the process died between the blobs and the rows

    with pytest.raises(Cut):
        restore_postgres(pg_backup, target.data_dir, target.dsn, after_blobs=cut)
    # Blobs (and the schema) are there, not one row: no row can lack its blob.
    assert database_rows(target.dsn) == {}
    assert any(k.startswith("parts/") for k in _objects(s3_endpoint, target.bucket))
    # A second restore into the half-filled bucket works.
    done = _run("restore", "--data", str(target.data_dir), str(pg_backup))
    assert done.returncode == 0, done.stderr
    _audit_verify(target.data_dir)
    # ...and a third, now that the database has rows, is refused.
    with pytest.raises(BackupError, match="already holds rows"):
        restore_postgres(pg_backup, target.data_dir, target.dsn)
    # Every row of the backup (serving them is the first test's part).
    conn = sqlite3.connect(f"file:{pg_backup / 'central.sqlite'}?mode=ro", uri=True)
    expected = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("submissions", "submission_parts", "uploads", "catalogs")}
    conn.close()
    rows = database_rows(target.dsn)
    assert {t: rows.get(t, 0) for t in expected} == expected
    # `central audit verify` on PostgreSQL finds an edited entry as it does on SQLite.
    with psycopg.connect(target.dsn) as conn:
        conn.execute("UPDATE audit SET subject = 'someone-else' WHERE seq = 2")
    done = _run("audit", "verify", "--data", str(target.data_dir))
    assert done.returncode == 1 and "broken at seq 2" in done.stdout, done.stdout


def test_the_postgres_snapshot_is_one_point_in_time(postgres_dsn: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An audit entry committed while the snapshot reads (after it read the chain's
    head in ``meta``, before the ``audit`` table) is not in the copy: every table is
    read from the one REPEATABLE READ snapshot, so the copy's chain matches its head."""
    from sync.central.storage import snapshot
    from sync.central.storage.audit_chain import first_broken
    from sync.central.storage.base import AuditEvent, AuditRow
    from sync.central.storage.pg_meta import PostgresMetaStore

    store = PostgresMetaStore(postgres_dsn, create=True)
    try:
        for n in range(3):
            store.append_audit(AuditEvent("test", "before", f"n{n}"))
        real = snapshot._pg_batches

        def racing(conn: Any, table: str, columns: list[str]) -> Iterator[Any]:
            if table == "audit":
                store.append_audit(AuditEvent("test", "during", "raced"))  # committed
            yield from real(conn, table, columns)

        monkeypatch.setattr(snapshot, "_pg_batches", racing)
        counts = snapshot.postgres_to_sqlite(postgres_dsn, tmp_path / "copy.sqlite")
        assert len(list(store.audit_rows())) == 4
    finally:
        store.close()
    assert counts["audit"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.sqlite"]  # one file
    conn = sqlite3.connect(tmp_path / "copy.sqlite")
    rows = [AuditRow(*r) for r in conn.execute(
        "SELECT seq, at, actor, action, subject, prev_hash, hash FROM audit ORDER BY seq")]
    head = conn.execute("SELECT value FROM meta WHERE key = 'audit_head'").fetchone()
    conn.close()
    assert first_broken(rows) == (3, None)
    assert head == (f"{rows[-1].seq}:{rows[-1].hash}",)
