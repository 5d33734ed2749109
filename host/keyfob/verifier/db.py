"""Engine set-up, transactions with retry, and schema migrations (Alembic, run from the library,
imported only when the schema needs one).

SQLite (the default) is opened in WAL mode with a busy timeout; write transactions start with
``BEGIN IMMEDIATE`` so two writers never both hold a read snapshot they then try to upgrade (which
SQLite answers with an immediate "database is locked" that no timeout helps), and a write that still
meets "database is locked" is retried with back-off. All of that waits at most a bounded time
(``lock_wait``: :data:`DEFAULT_WAIT_S`, or ``$KEYFOB_DB_WAIT`` seconds), then raises
:class:`DatabaseBusy`; on PostgreSQL the same bound is the session's ``lock_timeout``.

PostgreSQL (for several nodes) is reached through psycopg 3: ``postgresql://`` and ``postgres://``
URLs are read as ``postgresql+psycopg://``; any other SQLAlchemy URL is used as given. Its
transactions run at the server's default, READ COMMITTED, where the conditional UPDATEs of
:mod:`.attempts` (``... WHERE counter = :old``, ``... WHERE fail_count < :max_fail``) are still
atomic: an UPDATE that meets a row changed by a concurrent transaction waits for it and checks its
WHERE again on the new row. A transaction the server aborts as a deadlock victim or a
serialization failure is retried like a locked SQLite one.

A SQLite file is private: it is created with mode 0600 (its directory 0700 if we make it) before
SQLite opens it, SQLite gives its -wal and -shm files the same mode, and a database file or WAL
that group or others may access is refused on open (as the key file is). Messages name a database
by :func:`display`, which never shows a URL's password.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sqlite3
import stat
import sys
import time
from typing import TYPE_CHECKING

from .errors import DatabaseBusy, DatabaseError

ENV_DB = "KEYFOB_DB"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
ENV_WAIT = "KEYFOB_DB_WAIT"
#: seconds a write waits for a lock another process holds before :class:`DatabaseBusy`
DEFAULT_WAIT_S = 5.0
_WAIT_RE = re.compile(r"[0-9]+(\.[0-9]*)?\Z")
_MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")
_LOCKED = ("database is locked", "database is busy", "database table is locked", "lock timeout")
#: PostgreSQL's SQLSTATEs for "run the transaction again": serialization_failure, deadlock_detected
_RETRY_STATES = ("40001", "40P01")
#: URL schemes taken as PostgreSQL through psycopg 3 (SQLAlchemy's bare "postgresql" means psycopg2)
_PG_SCHEMES = ("postgresql://", "postgres://")
_PG_DRIVER = "postgresql+psycopg://"
_SQLITE_URL = "sqlite:///"

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

# SQLAlchemy is imported here only where an engine is made or used: a login on a SQLite file runs
# on the standard library's sqlite3 (:mod:`.sql`), and ``import sqlalchemy`` alone takes longer
# than ``keyfob validate`` may.


def default_db() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "keyfob", "verifier.db")


def to_url(db: str | os.PathLike) -> str:
    """A SQLAlchemy URL from a URL or a plain file path (taken as a SQLite file)."""
    text = os.fspath(db)
    for scheme in _PG_SCHEMES:
        if text.startswith(scheme):
            return _PG_DRIVER + text[len(scheme) :]
    if "://" in text:
        return text
    return "sqlite:///" + os.path.abspath(text)


def plain_sqlite_file(db: str | os.PathLike) -> str | None:
    """The file of a SQLite database given as a path or a plain ``sqlite:///PATH`` URL (no query),
    read without SQLAlchemy; None for anything else (another database, an in-memory one, a URL
    with options: those go through SQLAlchemy)."""
    url = to_url(db)
    if not url.startswith(_SQLITE_URL) or "?" in url:
        return None
    path = url[len(_SQLITE_URL) :]
    return path if path and path != ":memory:" else None


def sqlite_path(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return None
    return u.database or ":memory:"


def display(db: str | os.PathLike) -> str:
    """How a database is named in messages and output: its URL with any password hidden."""
    text = to_url(db)
    if text.startswith(_SQLITE_URL):
        return text  # a file: no password to hide
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(text).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return _URL_PASSWORD.sub(r"\1***@", text)


def _hide(message: str, db: str | os.PathLike) -> str:
    """``message`` (e.g. a driver's error text) with the database URL's password blotted out."""
    message = _URL_PASSWORD.sub(r"\1***@", message)
    if to_url(db).startswith(_SQLITE_URL):
        return message
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        password = make_url(to_url(db)).password
    except (ArgumentError, ValueError):
        password = None
    if password:
        message = message.replace(str(password), "***")
    return message


def driver_message(exc: BaseException, db: str | os.PathLike) -> str:
    """The first line of a database driver's error, safe to show (no password, no SQL parameters)."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return _hide(first, db)


@contextlib.contextmanager
def opening(db: str | os.PathLike):
    """Turn the driver's errors while opening ``db`` into one :class:`DatabaseError` line."""
    try:
        yield
    except DatabaseError:
        raise
    except Exception as exc:
        if "sqlalchemy" not in sys.modules:
            raise
        from sqlalchemy.exc import DatabaseError as SADatabaseError
        from sqlalchemy.exc import OperationalError, SQLAlchemyError

        if not isinstance(exc, SQLAlchemyError):
            raise
        if isinstance(exc, OperationalError):
            raise DatabaseError(f"cannot open database {display(db)}: {driver_message(exc, db)}") from None
        if isinstance(exc, SADatabaseError):
            raise DatabaseError(f"{display(db)} is not a keyfob database ({driver_message(exc, db)})") from None
        raise DatabaseError(f"cannot use database {display(db)}: {driver_message(exc, db)}") from None


def _check_file(path: str, header: bool = True) -> None:
    """Refuse what cannot be a private SQLite database: a directory, another kind of file, or a
    database (or its write-ahead log) that group or others may access (as ssh does with keys).

    ``header=False``: do not read the file's first bytes, because this process has the database
    open already: closing any descriptor of a file drops every POSIX lock the process holds on it,
    SQLite's included, and another process could then reset a WAL this one is still writing to."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise DatabaseError(f"{path} is a directory, not a keyfob database")
        head = b""
        if header:
            with open(path, "rb") as fh:
                head = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise DatabaseError(f"cannot read database {path}: {exc.strerror}") from None
    if head and head != _SQLITE_MAGIC:
        raise DatabaseError(f"{path} is not a keyfob database (not a SQLite file)")
    for p in (path, path + "-wal"):
        try:
            mode = os.stat(p).st_mode
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DatabaseError(f"cannot read database {p}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise DatabaseError(
                f"database file {p} is accessible by others (mode {stat.S_IMODE(mode):04o}); chmod 600 it"
            )


def _create_file(path: str) -> None:
    """Create an empty database file with mode 0600 (its directory 0700 if we make it) before SQLite
    opens it: SQLite gives its -wal and -shm files the database file's mode."""
    parent = os.path.dirname(os.path.abspath(path))
    try:
        if not os.path.exists(parent):
            os.makedirs(parent, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise DatabaseError(f"cannot create database {path}: {exc.strerror}") from None
    os.close(fd)


def lock_wait(value: float | None = None) -> float:
    """The bounded lock wait: ``value``, else ``$KEYFOB_DB_WAIT``, else :data:`DEFAULT_WAIT_S`."""
    if value is None:
        text = os.environ.get(ENV_WAIT)
        if not text:
            return DEFAULT_WAIT_S
        if _WAIT_RE.match(text.strip()) is None:
            raise DatabaseError(f"${ENV_WAIT} must be a number of seconds (0.1 to 3600)")
        value = float(text)
    if isinstance(value, bool) or not 0.1 <= value <= 3600:
        raise DatabaseError(f"the database lock wait is 0.1 to 3600 seconds, not {value!r}")
    return float(value)


def make_engine(
    db: str | os.PathLike,
    *,
    must_exist: bool,
    wait: float | None = None,
    header: bool = True,
    own_checkpoints: bool = True,
) -> Engine:
    """An engine for ``db`` whose writes wait at most ``wait`` seconds (:func:`lock_wait`) for a
    lock another process holds. ``header=False``: a SQLite file this process has open already
    (see :func:`_check_file`). ``own_checkpoints``: see :func:`sqlite_pragmas`."""
    wait = lock_wait(wait)
    engine = _make_engine(db, must_exist=must_exist, wait=wait, header=header, own_checkpoints=own_checkpoints)
    engine.keyfob_wait = wait  # read by write()
    return engine


def check_sqlite_file(path: str, *, must_exist: bool, header: bool = True) -> None:
    """Before a SQLite file is opened: it exists (``must_exist``) or is created private, and it is
    a private SQLite file (:func:`_check_file`; ``header``: its first bytes read too)."""
    if must_exist and not os.path.exists(path):
        raise DatabaseError(f"database {path} does not exist (run `keyfob server init`)")
    if not must_exist:
        _create_file(path)
    _check_file(path, header)


def sqlite_pragmas(dbapi_conn, wait: float, *, own_checkpoints: bool = True, sync_commits: bool = True) -> None:
    """Every SQLite connection's set-up (SQLAlchemy's and the login path's ``sqlite3`` ones):
    autocommit at the driver (we emit BEGIN ourselves), WAL, foreign keys, the WAL's checkpoint
    interval, the busy timeout of the lock wait, and each COMMIT synced to disk before it returns
    (``synchronous=FULL``). ``own_checkpoints=False``: none in this connection's commits, for a
    server's store, whose thread checkpoints (:mod:`.checkpoints`); ``sync_commits=False``: its
    COMMITs not synced (``NORMAL``), for the login path's connections, whose store syncs the log
    after the commit, out of the write lock (:mod:`.logsync`)."""
    dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (SQLAlchemy's pysqlite recipe)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL alone: always consistent, and a commit survives a killed process, but not an OS
    # crash or a power cut until the next checkpoint syncs the log: an accepted code could be
    # accepted again. So never NORMAL without the store's own sync after each commit.
    cur.execute("PRAGMA synchronous=FULL" if sync_commits else "PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    # a checkpoint (with its fsyncs) every ~40 MB of log rather than every 4 MB: a login writes a
    # few pages, the same ones over and over, so fewer checkpoints copy far fewer pages
    # (bench_verifier's end-to-end row: ~1,400/s -> ~1,900/s on this machine's disk)
    cur.execute("PRAGMA wal_autocheckpoint=10000" if own_checkpoints else "PRAGMA wal_autocheckpoint=0")
    cur.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
    cur.close()


def _make_engine(db, *, must_exist: bool, wait: float, header: bool, own_checkpoints: bool) -> Engine:
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = to_url(db)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise DatabaseError(f"not a database URL or path: {display(db)}") from None
    path = sqlite_path(url)
    if path is None:
        try:
            engine = create_engine(parsed, pool_pre_ping=True)
        except (ArgumentError, ImportError) as exc:
            raise DatabaseError(f"cannot use database {display(db)}: {_hide(str(exc), db)}") from None
        if engine.dialect.name == "postgresql":

            @event.listens_for(engine, "connect")
            def _pg_connect(dbapi_conn, _record):
                cur = dbapi_conn.cursor()
                cur.execute(f"SET lock_timeout = {int(wait * 1000)}")
                cur.close()
                dbapi_conn.commit()

        return engine
    if path == ":memory:" or parsed.database in (None, ""):
        raise DatabaseError("an in-memory SQLite database cannot be shared; give a file")
    check_sqlite_file(path, must_exist=must_exist, header=header)
    engine = create_engine(parsed, connect_args={"timeout": wait, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        sqlite_pragmas(dbapi_conn, wait, own_checkpoints=own_checkpoints)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return engine


def _operational(exc: BaseException):
    """The driver's error behind ``exc`` if it is an operational one (SQLAlchemy's wrapper or the
    stdlib sqlite3's own), else None."""
    if isinstance(exc, sqlite3.OperationalError):
        return exc
    if "sqlalchemy" in sys.modules:
        from sqlalchemy.exc import OperationalError

        if isinstance(exc, OperationalError):
            return exc.orig
    return None


def is_locked_error(exc: BaseException) -> bool:
    orig = _operational(exc)
    return orig is not None and any(m in str(orig).lower() for m in _LOCKED)


def is_retry_error(exc: BaseException) -> bool:
    """A transaction the database gave up on and that may simply run again: SQLite's "database is
    locked", PostgreSQL's serialization failure or deadlock victim."""
    orig = _operational(exc)
    if orig is None:
        return False
    return any(m in str(orig).lower() for m in _LOCKED) or getattr(orig, "sqlstate", None) in _RETRY_STATES


@contextlib.contextmanager
def read(engine: Engine):
    """A short read transaction."""
    with engine.connect() as conn, conn.begin():
        yield conn


def write(engine: Engine, fn):
    """Run ``fn(conn)`` in one write transaction (BEGIN IMMEDIATE on SQLite), retrying with jittered
    back-off while the database gives up on it (:func:`is_retry_error`) for at most the engine's lock
    wait, then
    :class:`DatabaseBusy`. Returns what ``fn`` returns; ``fn`` must be repeatable (it is re-run from
    scratch after a rollback)."""

    def once():
        with engine.connect() as conn:
            conn.execution_options(write=True)
            with conn.begin():
                return fn(conn)

    return retrying(getattr(engine, "keyfob_wait", DEFAULT_WAIT_S), once)


def jitter() -> float:
    """A number in [0, 1) to spread retries (the random module is not worth importing for it)."""
    return int.from_bytes(os.urandom(2), "big") / 65536


def retrying(wait: float, once):
    """``once()`` (one write transaction), run again with jittered back-off while the database gives
    up on it (:func:`is_retry_error`) for at most ``wait`` seconds, then :class:`DatabaseBusy`. The
    one retry loop of both drivers (:func:`write`, :class:`.sql.SqliteStore`)."""
    start = time.monotonic()
    delay = 0.002
    while True:
        try:
            return once()
        except Exception as exc:  # PostgreSQL's class 40 errors are OperationalErrors too
            if not is_retry_error(exc):
                raise
            if time.monotonic() - start >= wait:
                raise DatabaseBusy(
                    f"the database is locked by another process (waited {wait:g} s); try again"
                ) from None
        time.sleep(delay * (0.5 + jitter()))
        delay = min(delay * 2, 0.25)


# --- migrations -----------------------------------------------------------------------------------
#
# Alembic takes longer to import than a login takes to check, so it is imported only to migrate:
# opening a database compares its revision (one SELECT) with the head read from the migration
# files' own ``revision``/``down_revision`` lines.


def _alembic_config(conn):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", _MIGRATIONS)
    cfg.attributes["connection"] = conn
    return cfg


_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*(?:['\"]([^'\"]*)['\"]|None)\s*$", re.M)


@functools.cache
def head_revision() -> str:
    """The newest migration's revision, from the migration files' ``revision`` / ``down_revision``
    lines (without importing Alembic, or parsing the files)."""
    revisions, parents = set(), set()
    versions = os.path.join(_MIGRATIONS, "versions")
    for name in sorted(os.listdir(versions)):
        if not (name[:1].isdigit() and name.endswith(".py")):
            continue
        with open(os.path.join(versions, name), encoding="utf-8") as fh:
            found = {m.group(1): m.group(2) for m in _REVISION_LINE.finditer(fh.read())}
        revisions.add(found["revision"])
        parents.add(found.get("down_revision"))
    heads = revisions - parents
    if len(heads) != 1:
        raise AssertionError(f"the migrations must have one head, not {sorted(heads)}")
    return heads.pop()


def current_revision(engine: Engine) -> str | None:
    """The database's schema revision (Alembic's version table); None if it has none."""
    from sqlalchemy import inspect, text

    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:
        raise DatabaseError(f"the database has several schema revisions ({', '.join(sorted(rows))})")
    return rows[0] if rows else None


def has_tables(engine: Engine) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(engine).get_table_names())


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` through the Alembic migrations (in one write transaction)."""
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

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
