"""Engine set-up, transactions with retry, and schema migrations (Alembic, run from the library).

SQLite (the default) is opened in WAL mode with a busy timeout; write transactions start with
``BEGIN IMMEDIATE`` so two writers never both hold a read snapshot they then try to upgrade (which
SQLite answers with an immediate "database is locked" that no timeout helps), and a write that still
meets "database is locked" is retried with back-off. Any other SQLAlchemy URL (e.g. PostgreSQL for
several nodes) is used as given; the compare-and-set updates in :mod:`.service` are correct under
READ COMMITTED as well.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from .errors import DatabaseError

ENV_DB = "KEYFOB_DB"
BUSY_TIMEOUT_S = 30.0
_MIGRATIONS = Path(__file__).with_name("migrations")
_LOCKED = ("database is locked", "database is busy", "database table is locked")


def default_db() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "keyfob", "verifier.db")


def to_url(db: str | os.PathLike) -> str:
    """A SQLAlchemy URL from a URL or a plain file path (taken as a SQLite file)."""
    text = os.fspath(db)
    if "://" in text:
        return text
    return "sqlite:///" + os.path.abspath(text)


def sqlite_path(url: str) -> str | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return None
    return u.database or ":memory:"


def make_engine(db: str | os.PathLike, *, must_exist: bool) -> Engine:
    url = to_url(db)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"not a database URL or path: {os.fspath(db)!r}") from None
    path = sqlite_path(url)
    if path is None:
        try:
            return create_engine(parsed, pool_pre_ping=True)
        except (ArgumentError, ImportError) as exc:
            raise DatabaseError(f"cannot use database {parsed.render_as_string()}: {exc}") from None
    if path == ":memory:" or parsed.database in (None, ""):
        raise DatabaseError("an in-memory SQLite database cannot be shared; give a file")
    if must_exist and not os.path.exists(path):
        raise DatabaseError(f"database {path} does not exist (run `keyfob server init`)")
    if not must_exist:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (SQLAlchemy's pysqlite recipe)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable except on power loss mid-checkpoint
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return engine


def is_locked_error(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and any(m in str(exc.orig).lower() for m in _LOCKED)


@contextlib.contextmanager
def read(engine: Engine):
    """A short read transaction."""
    with engine.connect() as conn, conn.begin():
        yield conn


def write(engine: Engine, fn, *, tries: int = 20):
    """Run ``fn(conn)`` in one write transaction (BEGIN IMMEDIATE on SQLite), retrying on
    "database is locked" with jittered back-off. Returns what ``fn`` returns; ``fn`` must be
    repeatable (it is re-run from scratch after a rollback)."""
    delay = 0.002
    for attempt in range(tries):
        try:
            with engine.connect() as conn:
                conn.execution_options(write=True)
                with conn.begin():
                    return fn(conn)
        except OperationalError as exc:
            if not is_locked_error(exc) or attempt == tries - 1:
                if is_locked_error(exc):
                    raise DatabaseError("the database stayed locked; try again") from None
                raise
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.25)
    raise AssertionError("unreachable")


# --- migrations -----------------------------------------------------------------------------------


def _alembic_config(conn) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(_alembic_config(None)).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def has_tables(engine: Engine) -> bool:
    return bool(inspect(engine).get_table_names())


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` through the Alembic migrations (in one write transaction)."""
    script = ScriptDirectory.from_config(_alembic_config(None))
    current = current_revision(engine)
    if current is not None:
        try:
            known = script.get_revision(current) is not None
        except CommandError:
            known = False
        if not known:
            raise DatabaseError(
                f"the database schema ({current}) is newer than this keyfob release understands"
            ) from None

    def run(conn):
        command.upgrade(_alembic_config(conn), revision)

    write(engine, run)
