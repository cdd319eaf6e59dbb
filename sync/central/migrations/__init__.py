"""The central schema's versioned migrations (Alembic), for SQLite and PostgreSQL alike.

Alembic is configured in code (:mod:`sync.central.schema`), never by an ``alembic.ini``:
``env.py`` runs on the connection it is handed, ``versions/`` holds the revisions, and
:mod:`.schema3` the frozen DDL of the baseline. Nothing here is imported when a store is
only opened: see :mod:`sync.central.schema` for the check that runs then.
"""
