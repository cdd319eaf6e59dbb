"""The central schema's version: Alembic's head revision, checked on open, reached on init.

One schema for both stores, versioned by the migrations in :mod:`sync.central.migrations`
(Alembic, configured here in code: no ``alembic.ini``). Opening a store only reads
``alembic_version`` with the store's own driver (sqlite3 or psycopg) and compares it to
:data:`HEAD`; Alembic and SQLAlchemy are imported only to change the schema, which is
``central init``, ``central migrate``, and on the SQLite default an open that finds the
schema behind (it is brought up to date there, as before Alembic). On PostgreSQL an
instance never migrates behind the operator's back: it refuses to start (:func:`check_postgres`)
and says to run ``central migrate``.

A database made before Alembic (a ``meta`` table, no ``alembic_version``) is adopted, never
re-created: schema 3's idempotent DDL completes what an older store lacks (SQLite's
schemas 1 and 2, an early schema 3 without ``admins``, a PostgreSQL database without the S3
ledger), then it is stamped at :data:`BASELINE` and upgraded to the head like any other.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .storage.base import StorageError

if TYPE_CHECKING:
    import sqlalchemy

#: Alembic's head: the revision this code needs (a test checks it is the scripts' head).
HEAD = "0001_schema_3"
#: The first revision: schema 3 exactly as the code before Alembic made it.
BASELINE = "0001_schema_3"
#: The migration scripts (env.py, script.py.mako, versions/).
MIGRATIONS = Path(__file__).with_name("migrations")
#: Advisory lock (two int4 keys, the space pg_meta reserves) held by every schema change
#: on PostgreSQL until its transaction ends, so that two `central migrate`s, or `init`s,
#: run one after the other, and the second finds the first's result.
SCHEMA_LOCK = (0x49445231, 2)
#: ``meta.schema_version`` values of stores made before Alembic, per dialect: SQLite had
#: schemas 1 to 3; PostgreSQL came with schema 3.
_LEGACY = {"sqlite": {"1", "2", "3"}, "postgresql": {"3"}}
#: Alembic's ``op`` and ``context`` are module-level proxies: one upgrade per process at
#: a time (threads of one process would otherwise run in each other's context).
_ALEMBIC = threading.Lock()


class SchemaNotCurrent(StorageError):
    """The database's schema is not the one this ``central`` needs (``central migrate``)."""


@dataclass(frozen=True)
class Migration:
    """What one upgrade did: the revision before (None: no ``alembic_version``, an empty
    database or one made before Alembic), the one after, and whether the database was
    made before Alembic and adopted (completed, then stamped at the baseline)."""

    before: str | None
    after: str
    adopted: bool

    def describe(self) -> str:
        was = self.before or ("made before versioned migrations" if self.adopted
                              else "empty")
        if self.before == self.after:
            return f"schema at {self.after}: nothing to do"
        return f"schema from {was} to {self.after}"


def _known(revision: str) -> bool:
    # Alembic names a revision's file "<revision>_<slug>.py"; an unknown one was made by a
    # newer central, and migrating cannot help.
    return any((MIGRATIONS / "versions").glob(f"{revision}_*.py"))


def _refusal(revisions: frozenset[str] | None, has_meta: bool) -> StorageError | None:
    if revisions == frozenset({HEAD}):
        return None
    if revisions is None and not has_meta:
        return StorageError("the database has no central schema: run `central init`")
    if revisions is None:
        return SchemaNotCurrent("the database's schema was made before versioned"
                                f" migrations; this central needs {HEAD}:"
                                " run `central migrate`")
    found = ", ".join(sorted(revisions)) or "none"
    if not all(_known(r) for r in revisions):
        return SchemaNotCurrent(f"the database's schema is at revision {found}, which this"
                                " central does not know: a newer central migrated it")
    return SchemaNotCurrent(f"the database's schema is at revision {found}; this central"
                            f" needs {HEAD}: run `central migrate`")


# -- reading the revision with the stores' own drivers (no Alembic, no SQLAlchemy) --------

def sqlite_revisions(conn: sqlite3.Connection) -> frozenset[str] | None:
    """The revisions in ``alembic_version``; None if there is no such table."""
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                         " AND name = 'alembic_version'").fetchone()
    if found is None:
        return None
    return frozenset(str(r[0]) for r in conn.execute("SELECT version_num FROM alembic_version"))


def _postgres_state(conn: Any) -> tuple[frozenset[str] | None, bool]:
    from psycopg.rows import tuple_row

    cur = conn.cursor(row_factory=tuple_row)
    row = cur.execute("SELECT to_regclass('alembic_version') IS NOT NULL,"
                      " to_regclass('meta') IS NOT NULL").fetchone()
    if not row[0]:
        return None, bool(row[1])
    return frozenset(str(r[0]) for r in cur.execute(
        "SELECT version_num FROM alembic_version")), bool(row[1])


def postgres_revisions(conn: Any) -> frozenset[str] | None:
    """The revisions in ``alembic_version`` on a psycopg connection (autocommit); None
    if there is no such table."""
    return _postgres_state(conn)[0]


def check_postgres(conn: Any) -> None:
    """Raise unless the database is at :data:`HEAD`: StorageError ("run `central init`")
    for a database without the schema, SchemaNotCurrent ("run `central migrate`") for
    one behind (or ahead)."""
    refusal = _refusal(*_postgres_state(conn))
    if refusal is not None:
        raise refusal


def ensure_postgres(conn: Any, dsn: str) -> None:
    """``central init``'s step on PostgreSQL: upgrade to the head unless it is there
    (Alembic is imported only then), then check."""
    if postgres_revisions(conn) != frozenset({HEAD}):
        upgrade_postgres(dsn)
    check_postgres(conn)


def ensure_sqlite(conn: sqlite3.Connection, path: Path) -> None:
    """The SQLite default's open: upgrade to the head unless it is there, as the code
    before Alembic brought an older store up to date on every open."""
    if sqlite_revisions(conn) != frozenset({HEAD}):
        upgrade_sqlite(path)


# -- changing the schema (Alembic) ---------------------------------------------------------

def upgrade_sqlite(path: Path, *, scripts: Path = MIGRATIONS,
                   target: str = "head") -> Migration:
    """Upgrade the SQLite database at ``path`` to ``target``, in one transaction."""
    import sqlalchemy as sa

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    engine = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.NullPool)

    # pysqlite never sends BEGIN before DDL by itself; IMMEDIATE takes the write lock at
    # once, so a second process opening the same old store waits, then sees it done.
    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        return _upgrade(engine, scripts, target)
    finally:
        engine.dispose()


def upgrade_postgres(dsn: str, *, scripts: Path = MIGRATIONS,
                     target: str = "head") -> Migration:
    """Upgrade the PostgreSQL database at ``dsn`` to ``target``, in one transaction,
    under :data:`SCHEMA_LOCK`."""
    import psycopg
    import sqlalchemy as sa

    # The dialect is psycopg 3's; the connection is made by libpq from the configured
    # URL as it is (as the stores make theirs), rather than re-parsed into a SQLAlchemy
    # URL: percent-encoded passwords and ?host=/socket parameters stay libpq's to read,
    # and no URL is ever part of SQLAlchemy's messages.
    engine = sa.create_engine("postgresql+psycopg://", poolclass=sa.pool.NullPool,
                              creator=lambda: psycopg.connect(dsn, connect_timeout=10))
    try:
        return _upgrade(engine, scripts, target)
    finally:
        engine.dispose()


def _upgrade(engine: sqlalchemy.Engine, scripts: Path, target: str) -> Migration:
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.util.exc import CommandError

    from .migrations import schema3

    with _ALEMBIC, engine.connect() as conn, conn.begin():
        dialect = conn.dialect.name
        if dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:a, :b)"),
                         {"a": SCHEMA_LOCK[0], "b": SCHEMA_LOCK[1]})
            # The schema's commit must survive a power cut whatever the server says.
            conn.exec_driver_sql("SET LOCAL synchronous_commit TO on")
        # Read under the lock: a migrate that waited sees what the one before it did.
        before = MigrationContext.configure(conn).get_current_revision()
        tables = set(sa.inspect(conn).get_table_names())
        adopted = before is None and "meta" in tables
        config = Config()
        config.set_main_option("script_location", str(scripts))
        config.attributes["connection"] = conn
        try:
            if adopted:
                legacy = conn.exec_driver_sql(
                    "SELECT value FROM meta WHERE key = 'schema_version'").scalar()
                if legacy not in _LEGACY[dialect]:
                    raise StorageError(f"the database's schema_version is {legacy!r}, which"
                                       " this central does not know")
                schema3.create(conn)
                command.stamp(config, BASELINE)
            command.upgrade(config, target)
        except CommandError as exc:  # an unknown revision: a newer central's database
            raise SchemaNotCurrent(f"cannot migrate the database's schema: {exc}") from None
        after = MigrationContext.configure(conn).get_current_revision()
    assert after is not None
    return Migration(before, after, adopted)


def migrate(data_dir: Path) -> Migration:
    """``central migrate``: the store the data directory's configuration names, to the
    head (PostgreSQL if CENTRAL_DATABASE_URL is set, else its SQLite file). Errors are
    NotInitialised with the reason (exit 2), never naming the URL (it may hold a
    password)."""
    import sqlalchemy as sa

    from .core import DATABASE_URL, DB_NAME, NotInitialised, config_value

    url = config_value(data_dir, DATABASE_URL)
    where = f"the database in {DATABASE_URL}" if url else str(data_dir / DB_NAME)
    if url is None and not (data_dir / DB_NAME).is_file():
        raise NotInitialised(f"{data_dir} is not a central data directory:"
                             f" run `central init --data {data_dir}` first")
    if url is not None:
        import psycopg

        try:
            # A plain connection first, as the stores do: a wrong URL fails at once
            # with libpq's reason (host, port, user, database; never the password).
            psycopg.connect(url, connect_timeout=10).close()
        except psycopg.OperationalError as exc:
            raise NotInitialised(f"cannot connect to {where}:"
                                 f" {str(exc).strip().splitlines()[-1]}") from None
    try:
        return upgrade_sqlite(data_dir / DB_NAME) if url is None else upgrade_postgres(url)
    except StorageError as exc:
        raise NotInitialised(f"{exc} ({where})") from None
    except sa.exc.DBAPIError as exc:  # the one transaction was rolled back
        raise NotInitialised(f"the migration failed and changed nothing ({where}):"
                             f" {str(exc.orig).strip().splitlines()[0]}") from None
