"""One schema, versioned by Alembic (sync/central/migrations/, sync/central/schema.py).

The reference for "the same schema as before" is the code that made it before Alembic,
read from git (the commit before issue 14's migrations), run on a fresh database, and
compared catalog to catalog: sqlite_master on SQLite; columns, types, defaults,
identities, constraints and index definitions on PostgreSQL. Stores made by that code
(and by the older SQLite schemas 1 and 2) are adopted with their rows; PostgreSQL
instances refuse a schema that is not the head; `central migrate` is idempotent and
serialised by an advisory lock; a revision added in a copy of the scripts proves the
chain (upgrade, downgrade, a newer database refused).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlite_utils

from sync.central import schema
from sync.central.storage.base import StorageError
from sync.central.storage.pg_meta import PostgresMetaStore
from sync.central.storage.sqlite_meta import SqliteMetaStore
from sync.signing import SigningKey, format_signing_key_file
from tests.harness.central import REPO, _env, free_port
from tests.harness.postgres import PostgresCluster

#: The last commit before Alembic (issue 14): its code made schema 3 on both stores.
BEFORE = "37d9fed4134b006d16641ca415565a5578b2167f"
#: Commits whose SQLite code made the older schemas: 2, and an early 3 without admins.
SCHEMA_2 = "5b914cec7781c300bea0129e9f6c0462a9f4c44e"
EARLY_3 = "de24bdcfca628d8df4444a1b10153ee659ef3499"


def git_show(commit: str, path: str) -> str:
    done = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode != 0:  # a shallow clone: the reference code is not there
        pytest.skip(f"git history before issue 14 is not available: {done.stderr.strip()}")
    return done.stdout


def old_sqlite_schema(commit: str, path: Path, version: str) -> None:
    """Make ``path`` with the SQLite store's ``_create_schema`` as it was at ``commit``."""
    source = git_show(commit, "sync/central/storage/sqlite_meta.py")
    match = re.search(r"^def _create_schema\(.*?(?=^def )", source, re.S | re.M)
    assert match is not None
    scope: dict[str, Any] = {"sqlite_utils": sqlite_utils}
    exec(compile("from __future__ import annotations\n" + match.group(0), commit, "exec"),
         scope)
    conn = sqlite3.connect(path, isolation_level=None)
    scope["_create_schema"](sqlite_utils.Database(conn))
    conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                 (version,))
    conn.close()


def old_postgres_schema(dsn: str, *, ledger: bool) -> None:
    """The PostgreSQL DDL before Alembic: pg_meta's, and s3_blobs' ledger when S3 was
    configured."""
    scripts = [git_show(BEFORE, "sync/central/storage/pg_meta.py")]
    if ledger:
        scripts.append(git_show(BEFORE, "sync/central/storage/s3_blobs.py"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        for source in scripts:
            ddl = re.search(r'^_?SCHEMA = """(.*?)"""', source, re.S | re.M)
            assert ddl is not None
            conn.execute(ddl.group(1))
        conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', '3')")


def sqlite_catalog(path: Path) -> set[tuple[str, str, str, str | None]]:
    conn = sqlite3.connect(path)
    try:
        return {tuple(r) for r in conn.execute(  # type: ignore[misc]
            "SELECT type, name, tbl_name, sql FROM sqlite_master"
            " WHERE tbl_name != 'alembic_version'")}
    finally:
        conn.close()


def sqlite_columns(path: Path) -> set[tuple[Any, ...]]:
    """(table, column, type, not null, pk) and (index, its columns): the facts, without
    the CREATE text (an older sqlite-utils quoted names differently)."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")]
        facts = {(t, r[1], r[2], r[3], r[5]) for t in tables
                 for r in conn.execute(f'PRAGMA table_info("{t}")')}
        for name, sql in conn.execute("SELECT name, sql FROM sqlite_master"
                                      " WHERE type = 'index' AND sql IS NOT NULL"):
            facts.add(("index", name, re.sub(r"\s+", " ", sql.replace("IF NOT EXISTS ", ""))))
        return facts
    finally:
        conn.close()


def pg_catalog(dsn: str) -> dict[str, set[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        return {
            "columns": set(conn.execute(
                "SELECT table_name, column_name, data_type, is_nullable, column_default,"
                " is_identity, identity_generation, ordinal_position"
                " FROM information_schema.columns WHERE table_schema = 'public'"
                " AND table_name != 'alembic_version'").fetchall()),
            "constraints": set(conn.execute(
                "SELECT conrelid::regclass::text, conname, contype,"
                " pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE connamespace = 'public'::regnamespace"
                " AND conrelid::regclass::text != 'alembic_version'").fetchall()),
            "indexes": set(conn.execute(
                "SELECT tablename, indexname, indexdef FROM pg_indexes"
                " WHERE schemaname = 'public' AND tablename != 'alembic_version'").fetchall()),
        }


def pg_revisions(dsn: str) -> frozenset[str] | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return schema.postgres_revisions(conn)


def central(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sync.central", *args], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=timeout)


def pg_data_dir(tmp_path: Path, dsn: str, *, key: bool = True) -> Path:
    """A data directory naming ``dsn`` (and holding a service key, as after init)."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "central.conf").write_text(f"CENTRAL_DATABASE_URL={dsn}\n", encoding="utf-8")
    if key:
        (data / "service.key").write_text(format_signing_key_file(SigningKey.generate()),
                                          encoding="ascii")
    return data


NO_ALEMBIC = ("import sys; from sync.central.cli import main; code = main(sys.argv[1:]);"
              " print('loaded:', sorted(m for m in ('alembic', 'sqlalchemy')"
              " if m in sys.modules)); sys.exit(code)")


def status_without_alembic(data: Path) -> str:
    """`central status` in a fresh interpreter; it must not import alembic/SQLAlchemy."""
    done = subprocess.run([sys.executable, "-c", NO_ALEMBIC, "status", "--data", str(data)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout, done.stdout
    return done.stdout


# -- the head ----------------------------------------------------------------------------

def test_the_head_constant_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(schema.MIGRATIONS))
    scripts = ScriptDirectory.from_config(config)
    assert scripts.get_heads() == [schema.HEAD]
    assert scripts.get_bases() == [schema.BASELINE]
    # schema._known finds a revision by its file name: "<revision>_<slug>.py".
    for revision in scripts.walk_revisions():
        assert Path(revision.path).name.startswith(f"{revision.revision}_")


# -- SQLite --------------------------------------------------------------------------------

def test_sqlite_from_empty_is_the_schema_the_code_before_alembic_made(tmp_path: Path) -> None:
    old_sqlite_schema(BEFORE, tmp_path / "old.sqlite", "3")
    SqliteMetaStore(tmp_path / "new.sqlite", create=True).close()
    # The very same CREATE statements, byte for byte: tables, columns, types,
    # constraints, indexes (sqlite_master keeps the text).
    assert sqlite_catalog(tmp_path / "new.sqlite") == sqlite_catalog(tmp_path / "old.sqlite")
    conn = sqlite3.connect(tmp_path / "new.sqlite")
    assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
        (schema.HEAD,)]
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'"
                        ).fetchone() == ("3",)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def _old_rows(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO submissions(id, device_id, index_text, index_sha256,"
                 " index_signature, state, received_at) VALUES ('old',"
                 " 'dev-0123456789abcdef', x'7b7d', 'h', 's', 'received',"
                 " '2026-11-27T10:00:00Z')")
    conn.execute("INSERT INTO audit VALUES (1, 'at', 'cli', 'x', 'y', 'p', 'h')")
    conn.close()


@pytest.mark.parametrize("made_by", ["schema 1", "schema 2", "early schema 3", "schema 3"])
def test_an_sqlite_store_made_before_alembic_is_adopted_with_its_rows(
        tmp_path: Path, made_by: str) -> None:
    fresh, old = tmp_path / "fresh.sqlite", tmp_path / "central.sqlite"
    SqliteMetaStore(fresh, create=True).close()
    if made_by == "schema 1":
        # The foundation's store: meta alone, made by an insert (sync/central/store.py).
        sqlite_utils.Database(old)["meta"].insert(
            {"key": "schema_version", "value": "1"}, pk="key")
    else:
        commit = {"schema 2": SCHEMA_2, "early schema 3": EARLY_3}.get(made_by, BEFORE)
        old_sqlite_schema(commit, old, made_by[-1])
        _old_rows(old)
    before = sqlite_catalog(old)
    store = SqliteMetaStore(old, create=True)  # what every `central` command does
    try:
        assert store.get_meta("schema_version") == "3"
        if made_by != "schema 1":
            kept = store.get_submission("old")
            assert kept is not None and kept.state == "received" and kept.reason is None
            assert [r.seq for r in store.audit_rows()] == [1]
            assert store.set_submission_state("old", "received", "in_review", None, None, 1.0)
    finally:
        store.close()
    assert sqlite_columns(old) == sqlite_columns(fresh)
    after = sqlite_catalog(old)
    if made_by == "schema 3":
        # Stamped, not touched: not one CREATE in sqlite_master changed.
        assert after == before
    else:
        # Completed: what was there stays as it was made (no table re-created).
        assert {e for e in before if e[0] == "table" and e[2] != "submissions"} <= after
    conn = sqlite3.connect(old)
    assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
        (schema.HEAD,)]
    conn.close()


def test_central_migrate_on_the_sqlite_default_is_idempotent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert central("init", "--data", str(data)).returncode == 0
    catalog = sqlite_catalog(data / "central.sqlite")
    for _ in range(2):
        done = central("migrate", "--data", str(data))
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"central: schema at {schema.HEAD}: nothing to do"
    assert sqlite_catalog(data / "central.sqlite") == catalog
    # A store made before Alembic: `central migrate` adopts it, once.
    for name in ("central.sqlite", "central.sqlite-wal", "central.sqlite-shm"):
        (data / name).unlink(missing_ok=True)
    old_sqlite_schema(BEFORE, data / "central.sqlite", "3")
    done = central("migrate", "--data", str(data))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"central: schema from made before versioned migrations"
                                   f" to {schema.HEAD}")
    assert "nothing to do" in central("migrate", "--data", str(data)).stdout
    # Opening it afterwards (every command) loads neither alembic nor SQLAlchemy.
    status_without_alembic(data)
    done = central("migrate", "--data", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "run `central init" in done.stderr


# -- PostgreSQL -----------------------------------------------------------------------------

def test_postgres_from_empty_is_the_schema_the_code_before_alembic_made(
        postgres_cluster: PostgresCluster, postgres_dsn: str, tmp_path: Path) -> None:
    old = postgres_cluster.new_database()
    try:
        old_postgres_schema(old, ledger=True)  # `central init` with S3 configured
        PostgresMetaStore(postgres_dsn, create=True).close()
        assert pg_catalog(postgres_dsn) == pg_catalog(old)
    finally:
        postgres_cluster.drop_database(old)
    assert pg_revisions(postgres_dsn) == {schema.HEAD}
    # One schema: the same tables and columns as SQLite's, plus the S3 upload ledger and
    # public_audio.added (SQLite's implicit rowid); the same index names.
    SqliteMetaStore(tmp_path / "s.sqlite", create=True).close()
    lite = {(f[0], f[1]) for f in sqlite_columns(tmp_path / "s.sqlite") if f[0] != "index"}
    lite_indexes = {f[1] for f in sqlite_columns(tmp_path / "s.sqlite") if f[0] == "index"}
    pg = pg_catalog(postgres_dsn)
    cols = {(c[0], c[1]) for c in pg["columns"]}
    ledger = {c for c in cols if c[0] in ("upload_blobs", "upload_blob_parts", "upload_tails")}
    assert len(ledger) == 11
    assert cols - ledger - {("public_audio", "added")} | {
        ("alembic_version", "version_num")} == lite
    assert {i[1] for i in pg["indexes"] if not i[1].endswith("_pkey")} == lite_indexes


def test_a_postgres_database_made_before_alembic_is_refused_then_migrated(
        postgres_dsn: str, tmp_path: Path) -> None:
    # `central init` before Alembic, without S3: no ledger tables.
    old_postgres_schema(postgres_dsn, ledger=False)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO devices(id, public_key, token_hash, enrolled_at)"
                     " VALUES ('dev-1', 'pk', 'th', 1.0)")
        conn.execute("INSERT INTO audit VALUES (1, 'at', 'cli', 'x', 'y', 'p', 'h')")
    before = pg_catalog(postgres_dsn)
    data = pg_data_dir(tmp_path, postgres_dsn)
    # The service (and every other command) refuses, and migrates nothing itself.
    serve = central("serve", "--data", str(data), "--port", str(free_port()), timeout=30)
    assert serve.returncode == 2, serve.stderr
    assert "made before versioned migrations" in serve.stderr
    assert "run `central migrate`" in serve.stderr
    assert postgres_dsn not in serve.stderr  # the URL may hold a password
    devices = central("devices", "--data", str(data))
    assert devices.returncode == 2 and "run `central migrate`" in devices.stderr
    assert pg_revisions(postgres_dsn) is None and pg_catalog(postgres_dsn) == before
    with pytest.raises(StorageError, match="run `central migrate`"):
        PostgresMetaStore(postgres_dsn)

    done = central("migrate", "--data", str(data))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"central: schema from made before versioned migrations"
                                   f" to {schema.HEAD}")
    assert pg_revisions(postgres_dsn) == {schema.HEAD}
    after = pg_catalog(postgres_dsn)
    # Stamped: every table, column, constraint and index as it was; the ledger added.
    for part in ("columns", "constraints", "indexes"):
        assert before[part] <= after[part]
        assert {row[0] for row in after[part] - before[part]} == {
            "upload_blobs", "upload_blob_parts", "upload_tails"}
    devices = central("devices", "--data", str(data))
    assert devices.returncode == 0 and "dev-1" in devices.stdout, devices.stderr
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT seq, hash FROM audit").fetchall() == [(1, "h")]
    # Opening it now (every command) loads neither alembic nor SQLAlchemy.
    status_without_alembic(data)
    done = central("migrate", "--data", str(data))
    assert done.stdout.strip() == f"central: schema at {schema.HEAD}: nothing to do"
    assert pg_catalog(postgres_dsn) == after
    # A database that cannot be reached: libpq's reason, never the URL.
    bad = postgres_dsn.replace("/t_", "/no_")
    (data / "central.conf").write_text(f"CENTRAL_DATABASE_URL={bad}\n", encoding="utf-8")
    done = central("migrate", "--data", str(data))
    assert done.returncode == 2 and "does not exist" in done.stderr, done.stderr
    assert bad not in done.stderr


def test_two_concurrent_migrates_on_postgres_take_turns(postgres_dsn: str,
                                                          tmp_path: Path) -> None:
    data = pg_data_dir(tmp_path, postgres_dsn, key=False)
    command = [sys.executable, "-m", "sync.central", "migrate", "--data", str(data)]
    with psycopg.connect(postgres_dsn, autocommit=True) as holder:
        # Held here, both must queue on it before touching the schema; released at once,
        # they meet at the lock, and the second must find the first's result.
        holder.execute("SELECT pg_advisory_lock(%s, %s)", schema.SCHEMA_LOCK)
        procs = [subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        deadline = time.monotonic() + 30
        while True:
            waiting = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                " AND NOT granted").fetchone()
            if waiting == (2,):
                break
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            assert time.monotonic() < deadline, "the migrates never waited for the lock"
            time.sleep(0.05)
        tables = holder.execute("SELECT count(*) FROM pg_tables"
                                " WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)  # nothing done before the lock
        holder.execute("SELECT pg_advisory_unlock(%s, %s)", schema.SCHEMA_LOCK)
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outs.append(out.strip())
    assert sorted(outs) == [f"central: schema at {schema.HEAD}: nothing to do",
                            f"central: schema from empty to {schema.HEAD}"]
    assert pg_revisions(postgres_dsn) == {schema.HEAD}


# -- the chain: a revision after the head, in a copy of the scripts -------------------------

NEXT = '''"""A test revision: devices gain a column, with a NOT NULL default.

Revision ID: 0002_test
Revises: 0001_schema_3
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_test"
down_revision = "0001_schema_3"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("site", sa.Text(), nullable=False, server_default="hq"))
        batch.create_index("devices_site", ["site"])


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_index("devices_site")
        batch.drop_column("site")
'''


def _downgrade(url: str, scripts: Path, creator: Any) -> None:
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    engine = sa.create_engine(url, creator=creator, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        config = Config()
        config.set_main_option("script_location", str(scripts))
        config.attributes["connection"] = conn
        command.downgrade(config, schema.HEAD)
    engine.dispose()


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_a_new_revision_upgrades_downgrades_and_a_newer_database_is_refused(
        tmp_path: Path, dialect: str, request: pytest.FixtureRequest) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, scripts,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "0002_test.py").write_text(NEXT, encoding="utf-8")
    path = tmp_path / "central.sqlite"
    dsn = "" if dialect == "sqlite" else str(request.getfixturevalue("postgres_dsn"))

    def open_store(**kw: Any) -> Any:
        return (SqliteMetaStore(path, **kw) if dialect == "sqlite"
                else PostgresMetaStore(dsn, **kw))

    def columns() -> set[str]:
        if dialect == "sqlite":
            with sqlite3.connect(path) as conn:
                return {r[1] for r in conn.execute("PRAGMA table_info(devices)")}
        with psycopg.connect(dsn) as conn:
            return {r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'devices'")}

    def upgrade(target: str = "head") -> schema.Migration:
        if dialect == "sqlite":
            return schema.upgrade_sqlite(path, scripts=scripts, target=target)
        return schema.upgrade_postgres(dsn, scripts=scripts, target=target)

    store = open_store(create=True)
    store.add_enrol_code("code", "desk", 1.0, 100.0)
    assert store.enrol_device("code", 2.0, "dev-1", "pk", "token")
    store.close()
    assert upgrade().describe() == f"schema from {schema.HEAD} to 0002_test"
    assert "site" in columns()
    assert upgrade().describe() == "schema at 0002_test: nothing to do"
    # This central's scripts stop at 0001: a database at 0002 is refused, not touched.
    if dialect == "sqlite":
        with pytest.raises(schema.SchemaNotCurrent, match="0002_test"):
            SqliteMetaStore(path, create=True)
    else:
        with pytest.raises(schema.SchemaNotCurrent, match="newer central"):
            PostgresMetaStore(dsn)
    # Down again: the row survives SQLite's table copy, and the column is gone.
    if dialect == "sqlite":
        _downgrade("sqlite://", scripts, lambda: sqlite3.connect(path))
    else:
        _downgrade("postgresql+psycopg://", scripts, lambda: psycopg.connect(dsn))
    assert "site" not in columns()
    store = open_store()
    try:
        device = store.get_device("dev-1")
        assert device is not None and device.name == "desk"
    finally:
        store.close()
