"""Verifier databases for the tests: one suite, run on SQLite and on a real PostgreSQL.

A test asks for the ``db`` fixture (or ``make_db`` for more than one database, or ``db_kind`` and
the session's ``databases`` in a wider-scoped fixture); the conftest parametrises them by
:data:`KINDS`, so the test runs once per kind (:data:`sqlite_only` for a test about the file).
A database is a plain string that ``Verifier.init/open`` and the CLI's ``--db`` take: a SQLite
file path, or a PostgreSQL URL of a fresh empty database on this worker's throwaway server
(:mod:`bench.pgserver`).

The helpers below read a database the same way on both engines, through SQLAlchemy.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from keyfob.verifier import db as vdb
from sqlalchemy import MetaData, create_engine, inspect, select
from sqlalchemy.pool import NullPool

from bench.pgserver import MISSING, PgServer, find_bindir

KINDS = ("sqlite", "postgresql")
#: for a test about the SQLite file itself (its mode, its WAL): ``db`` and ``make_db`` give SQLite only
sqlite_only = pytest.mark.parametrize("db_kind", ["sqlite"], indirect=True)
#: for a test of PostgreSQL's own behaviour (its URLs, its errors)
postgresql_only = pytest.mark.parametrize("db_kind", ["postgresql"], indirect=True)


@functools.cache
def postgresql_missing() -> str | None:
    """Why the PostgreSQL cases cannot run here (None: they can)."""
    return MISSING if find_bindir() is None else None


def kind(db: str | os.PathLike) -> str:
    """``sqlite`` or ``postgresql``."""
    return "sqlite" if vdb.sqlite_path(vdb.to_url(db)) is not None else "postgresql"


class Databases:
    """Hands out fresh databases; starts this process's PostgreSQL server on first need."""

    def __init__(self, tag: str):
        self._tag = tag
        self._server: PgServer | None = None

    @property
    def server(self) -> PgServer:
        if self._server is None:
            self._server = PgServer.start(tag=self._tag)
        return self._server

    def new(self, which: str, folder: Path, name: str = "v") -> str:
        """A fresh database: ``folder/name.db`` for SQLite (not created yet: ``Verifier.init``
        makes it), a new empty database on the server for PostgreSQL."""
        if which == "sqlite":
            return str(folder / f"{name}.db")
        return self.server.create_database()

    def drop(self, db: str) -> None:
        if kind(db) == "postgresql" and self._server is not None:
            self._server.drop_database(db)

    def on_disk(self, db: str) -> bytes:
        """The bytes the engine has stored for ``db``: the SQLite file and its WAL, or the
        PostgreSQL database's files and the server's write-ahead log."""
        if kind(db) == "sqlite":
            return b"".join(Path(p).read_bytes() for p in (db, db + "-wal") if Path(p).exists())
        return self.server.on_disk(db)

    def server_log(self, db: str) -> str:
        """What the database server logged (SQLite has no server: empty)."""
        return "" if kind(db) == "sqlite" or self._server is None else self._server.log_text()

    def deadlocks(self, db: str) -> int:
        """Deadlocks the server of ``db`` has logged so far (SQLite: 0, it runs writers one at a
        time). The verifier retries a deadlock victim, so only the log shows that one happened."""
        if kind(db) == "sqlite" or self._server is None:
            return 0
        return self._server.log_count("deadlock detected")

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


def _engine(db):
    return create_engine(vdb.to_url(db), poolclass=NullPool)


def dump(db) -> dict:
    """Every table's rows, in primary-key order: equal dumps mean an unchanged database."""
    engine = _engine(db)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return {
                name: [tuple(r) for r in conn.execute(select(t).order_by(*(t.primary_key.columns or t.columns)))]
                for name, t in sorted(meta.tables.items())
            }
    finally:
        engine.dispose()


def schema(db) -> dict:
    """Per table: ({column: type as the engine declares it}, {index names}), plus unique constraints
    and foreign keys by name, read through SQLAlchemy's inspector."""
    engine = _engine(db)
    try:
        insp = inspect(engine)
        out = {}
        for table in insp.get_table_names():
            cols = {c["name"]: str(c["type"]) for c in insp.get_columns(table)}
            idx = {i["name"] for i in insp.get_indexes(table)}
            uniq = {u["name"] for u in insp.get_unique_constraints(table)}
            fks = {f["name"] for f in insp.get_foreign_keys(table)}
            out[table] = (cols, idx, uniq, fks)
        return out
    finally:
        engine.dispose()
