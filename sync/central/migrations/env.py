"""Alembic's environment for the central schema: online only, on a handed-in connection.

:func:`sync.central.schema.upgrade_sqlite` and :func:`~sync.central.schema.upgrade_postgres`
open the connection, begin the one transaction the whole upgrade runs in (after taking
the schema lock) and pass the connection in ``config.attributes["connection"]``; Alembic
sees a transaction already open and runs every revision inside it, so an upgrade is
all or nothing on both dialects.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    # No URL in any file and no --sql mode: only sync.central.schema runs migrations.
    raise RuntimeError("run migrations with `central migrate`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=None,
    # SQLite cannot ALTER most things in place: batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
