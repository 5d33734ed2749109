"""The login path's connection protocol, without SQLAlchemy on a SQLite file.

A login is a few plain SQL statements (portable text with ``:name`` parameters); building them
through SQLAlchemy's execution path costs several times what SQLite spends running them, and
importing SQLAlchemy costs more than a ``keyfob validate`` may take. So the login path (logins,
attempts, throttle, the audit row, opening a current database) speaks this small protocol:

* ``conn.execute(sql, params)`` -> a result with ``rowcount``, ``all()``, ``first()``,
  ``scalar()`` (``UPDATE ... RETURNING`` gives its rows); ``conn.dialect`` names the database;
* ``store.write(fn)``: ``fn(conn)`` in one write transaction, with the bounded wait and
  :class:`DatabaseBusy` of :func:`.db.retrying`; ``store.read()``: a read transaction.

:class:`SqliteStore` runs it on the standard library's ``sqlite3`` (a connection per transaction, the
pragmas of :mod:`.db`, ``BEGIN IMMEDIATE`` for writes); :class:`EngineStore` on a SQLAlchemy engine
(PostgreSQL through psycopg, or any other URL). :func:`of` lets the shared primitives take a bare
SQLAlchemy connection too (the admin operations, which stay on SQLAlchemy Core). The dialect
differences are here: :func:`lock_sql`.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
import time

from . import db
from .checkpoints import Checkpointer
from .errors import DatabaseBusy, DatabaseError
from .logsync import LogSync


class _Rows:
    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows, rowcount):
        self._rows = rows
        self.rowcount = rowcount

    def all(self):
        return self._rows

    def first(self):
        return self._rows[0] if self._rows else None

    def scalar(self):
        return self._rows[0][0] if self._rows else None


class SqliteConn:
    """The protocol on one ``sqlite3`` connection (inside a transaction of :class:`SqliteStore`)."""

    __slots__ = ("_raw",)
    dialect = "sqlite"

    def __init__(self, raw: sqlite3.Connection):
        self._raw = raw

    def execute(self, sql: str, params=None) -> _Rows:
        cur = self._raw.execute(sql, params or ())
        rows = cur.fetchall()  # before rowcount: an UPDATE ... RETURNING counts as its rows are read
        return _Rows(rows, cur.rowcount)


@functools.lru_cache(maxsize=512)
def _text(sql: str):
    from sqlalchemy import text

    return text(sql)


class EngineConn:
    """The protocol on a SQLAlchemy connection."""

    __slots__ = ("_c", "dialect")

    def __init__(self, conn):
        self._c = conn
        self.dialect = conn.dialect.name

    def execute(self, sql: str, params=None):
        return self._c.execute(_text(sql), params or {})


def of(conn):
    """``conn`` speaking the protocol: itself, or a SQLAlchemy connection wrapped."""
    if type(conn) is SqliteConn or type(conn) is EngineConn:
        return conn
    return EngineConn(conn)


def lock_sql(conn, sql: str) -> str:
    """``sql`` (a SELECT of rows to change later in the transaction) with the row lock an UPDATE
    takes on PostgreSQL (``FOR NO KEY UPDATE``); SQLite needs none (its writes run one at a time)."""
    return sql + " FOR NO KEY UPDATE" if conn.dialect == "postgresql" else sql


# --- stores -----------------------------------------------------------------------------------------

#: SQLite files this process has open through a store (path -> stores): their header is not read
#: again (see :func:`.db._check_file`: closing that read would drop the process's locks)
_IN_USE: dict[str, int] = {}
_IN_USE_LOCK = threading.Lock()


#: the longest pause between two tries for the write lock. SQLite's own busy handler sleeps 1, 2,
#: 5, 10, ... 100 ms between its tries, so a writer that lost the race once slept long after the
#: lock was free: at 1,000 logins/s on 2 server workers, 1 in 10 waited 9 ms and 1 in 100 over
#: 80 ms for a lock that is held 0.2 ms (docs/bench.md).
POLL_MAX_S = 0.0005


def _poll_begin(raw: sqlite3.Connection, deadline: float) -> None:
    """``BEGIN IMMEDIATE``, asked again every few hundred microseconds while another process holds
    the file's write lock, until ``deadline`` (monotonic); SQLite's busy timeout must be 0."""
    pause = 0.00005
    while True:
        try:
            raw.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not db.is_locked_error(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause * (0.5 + db.jitter()))
        pause = min(pause * 1.5, POLL_MAX_S)


def _begin_immediate(raw: sqlite3.Connection, turn: threading.Lock, wait: float) -> None:
    """``BEGIN IMMEDIATE`` within ``wait`` seconds, holding ``turn`` once it returns. The store's
    threads take turns on ``turn``, so they never race in SQLite; the one whose turn it is polls
    for the file's write lock (:func:`_poll_begin`), with SQLite's busy timeout set aside."""
    deadline = time.monotonic() + wait
    if not turn.acquire(timeout=wait):
        raise sqlite3.OperationalError("database is locked")  # the same as SQLite's: retrying ends it
    try:
        raw.execute("PRAGMA busy_timeout=0")
        try:
            _poll_begin(raw, deadline)
        finally:
            raw.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
    except BaseException:
        turn.release()
        raise


class WouldWait(DatabaseBusy):
    """:meth:`SqliteStore.write_now` could not start its transaction this moment; nothing was run
    (its caller, an event loop, tries again later: keyfob.server.validate._write)."""


#: idle connections a store keeps for the next transaction (more are closed when given back)
IDLE_MAX = 8


class SqliteStore:
    """A SQLite file through ``sqlite3``: a transaction takes an idle connection (the one used
    last: its page cache is the warmest) or opens one with :func:`.db.sqlite_pragmas`, and gives
    it back after; at most :data:`IDLE_MAX` wait idle. Not one per thread: the HTTP front's thread
    pools retire their threads, and each would leave its connection open until :meth:`close`.
    The SQLAlchemy engine (for admin operations and migrations) is made only when asked for.

    Every commit is on disk before its outcome is used: the store's connections commit without a
    sync (out of the file's write lock) and the store syncs the log after (:mod:`.logsync`; a
    server's, ``serving``, with one sync shared by the commits waiting for it). :meth:`write`
    returns once its commit is on disk; after :meth:`write_now` (an event loop's), the caller
    waits for :meth:`on_disk` before it answers. The SQLAlchemy engine's commits (admin
    operations) sync inside the COMMIT."""

    def __init__(self, path: str, url: str, wait: float, *, serving: bool = False):
        self.path, self.url, self.wait = path, url, wait
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._turn = threading.Lock()  # the store's writers, one at a time (_begin_immediate)
        self._engine = None
        self._closed = False
        # a server's store: WAL checkpoints on a thread of their own, not in a login's commit
        self.checkpoints = Checkpointer(path) if serving else None
        self.log_sync = LogSync(path, shared=serving)
        with _IN_USE_LOCK:
            _IN_USE[path] = _IN_USE.get(path, 0) + 1

    def _take(self, *, waiting: bool = True) -> sqlite3.Connection:
        """The last idle connection, or a new one; ``waiting=False``: a new one's set-up (which
        reads the file) meets a lock at once, as a locked error, rather than on the busy timeout
        (the connection has the store's wait once set up, as every other)."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
        raw = sqlite3.connect(
            self.path, timeout=self.wait if waiting else 0, isolation_level=None, check_same_thread=False
        )
        try:
            db.sqlite_pragmas(raw, self.wait, own_checkpoints=self.checkpoints is None, sync_commits=False)
        except BaseException:
            raw.close()
            raise
        return raw

    def _give(self, raw: sqlite3.Connection) -> None:
        """Back to the idle list; closed instead if the store is closed, the list full, or a
        transaction is still open on it (a ROLLBACK that failed: never reuse that one)."""
        with self._lock:
            if not self._closed and len(self._idle) < IDLE_MAX and not raw.in_transaction:
                self._idle.append(raw)
                return
        raw.close()

    @staticmethod
    def _end(raw: sqlite3.Connection) -> None:
        """After a failure inside a transaction (in ``fn`` or in its COMMIT): roll back whatever is
        still open, so the connection never keeps the file's write lock."""
        if raw.in_transaction:
            try:
                raw.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the connection is closed by _give (still in a transaction)

    def write(self, fn, *, sync: bool = True):
        """``fn(conn)`` in one ``BEGIN IMMEDIATE`` transaction, re-run while the database stays locked
        (at most the lock wait, then :class:`DatabaseBusy`); returns once the commit is on disk
        (``sync=False``: the caller calls :meth:`sync` before it answers on the strength of it)."""

        def once():
            raw = self._take()
            try:
                _begin_immediate(raw, self._turn, self.wait)
                try:
                    out = fn(SqliteConn(raw))
                    raw.execute("COMMIT")
                    if self.checkpoints is not None:
                        self.checkpoints.committed()
                except BaseException:
                    self._end(raw)
                    raise
                finally:
                    self._turn.release()
                return out
            finally:
                self._give(raw)

        out = db.retrying(self.wait, once)
        if sync:
            self.log_sync.sync()  # never inside retrying: the commit is done, fn must not run again
        return out

    def sync(self) -> None:
        """Every commit made so far on disk (after :meth:`write` with ``sync=False``)."""
        self.log_sync.sync()

    def on_disk(self):
        """After :meth:`write_now`: a ``concurrent.futures.Future`` done once its commit (and every
        one before it) is on disk, failed with :class:`DatabaseError` if the log could not be
        synced. Nothing is to be answered on the strength of a commit before."""
        return self.log_sync.ask()

    def write_now(self, fn):
        """:meth:`write` if its transaction can start this moment, else :class:`WouldWait` with
        nothing run: for an event loop, which must not wait, and tries again later itself
        (:mod:`.steps`). It waits neither for this store's other writers nor for another
        process's write lock, and nothing in it waits on SQLite's busy handler. A transaction
        SQLite gives up on (locked after all) is rolled back and is a :class:`WouldWait` too. Its
        commit is on disk once :meth:`on_disk` says so."""
        if not self._turn.acquire(blocking=False):
            raise WouldWait
        raw = None
        try:
            try:
                raw = self._take(waiting=False)
            except sqlite3.OperationalError as exc:  # a new connection's set-up found the file locked
                if db.is_locked_error(exc):
                    raise WouldWait from None
                raise
            raw.execute("PRAGMA busy_timeout=0")
            try:
                try:
                    raw.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if db.is_locked_error(exc):
                        raise WouldWait from None
                    raise
                try:
                    out = fn(SqliteConn(raw))
                    raw.execute("COMMIT")
                except BaseException as exc:
                    self._end(raw)
                    if db.is_retry_error(exc):
                        raise WouldWait from None
                    raise
            finally:
                raw.execute(f"PRAGMA busy_timeout={int(self.wait * 1000)}")
            if self.checkpoints is not None:
                self.checkpoints.committed()
            return out
        finally:
            self._turn.release()
            if raw is not None:
                self._give(raw)

    @contextlib.contextmanager
    def read(self):
        """A read transaction (opening a database; an API key's check)."""
        raw = self._take()
        try:
            raw.execute("BEGIN")
            try:
                yield SqliteConn(raw)
                raw.execute("COMMIT")
            except BaseException:
                self._end(raw)
                raise
        finally:
            self._give(raw)

    def engine(self):
        with self._lock:
            if self._engine is None:
                self._engine = db.make_engine(
                    self.url, must_exist=True, wait=self.wait, header=False, own_checkpoints=self.checkpoints is None
                )
            return self._engine

    def close(self) -> None:
        """Close the idle connections now; one in use is closed when its transaction gives it back."""
        with self._lock:
            conns, self._idle = self._idle, []
            engine, self._engine = self._engine, None
            closed, self._closed = self._closed, True
        if not closed:
            with _IN_USE_LOCK:
                _IN_USE[self.path] -= 1
                if not _IN_USE[self.path]:
                    del _IN_USE[self.path]
        for raw in conns:
            raw.close()
        if engine is not None:
            engine.dispose()
        if self.checkpoints is not None and not closed:
            self.checkpoints.close()
        if not closed:
            self.log_sync.close()


class EngineStore:
    """The protocol on a SQLAlchemy engine (PostgreSQL, or any database that is not a SQLite file)."""

    def __init__(self, engine):
        self._e = engine
        self.url = engine.url.render_as_string(hide_password=False)

    def write(self, fn, *, sync: bool = True):
        """``sync`` is for the protocol: each commit here is on disk when it returns (the
        database's own setting: PostgreSQL's default, ``synchronous_commit=on``)."""
        return db.write(self._e, lambda conn: fn(EngineConn(conn)))

    def sync(self) -> None:
        pass

    @contextlib.contextmanager
    def read(self):
        with db.read(self._e) as conn:
            yield EngineConn(conn)

    def engine(self):
        return self._e

    def close(self) -> None:
        self._e.dispose()


def open_store(database, *, must_exist: bool, wait: float | None = None, serving: bool = False):
    """The store for ``database``: :class:`SqliteStore` for a SQLite file (checked as
    :func:`.db.make_engine` checks it), else an :class:`EngineStore`. ``serving``: for a
    long-running front, see :mod:`.checkpoints`."""
    wait = db.lock_wait(wait)
    path = db.plain_sqlite_file(database)
    if path is None:
        return EngineStore(db.make_engine(database, must_exist=must_exist, wait=wait))
    with _IN_USE_LOCK:
        header = path not in _IN_USE
    db.check_sqlite_file(path, must_exist=must_exist, header=header)
    return SqliteStore(path, db.to_url(database), wait, serving=serving)


@contextlib.contextmanager
def opening(database):
    """:func:`.db.opening` for the stdlib driver too: its errors while opening ``database`` become
    the same one :class:`DatabaseError` line."""
    try:
        with db.opening(database):
            yield
    except sqlite3.OperationalError as exc:
        raise DatabaseError(
            f"cannot open database {db.display(database)}: {db.driver_message(exc, database)}"
        ) from None
    except sqlite3.DatabaseError as exc:
        raise DatabaseError(
            f"{db.display(database)} is not a keyfob database ({db.driver_message(exc, database)})"
        ) from None
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot use database {db.display(database)}: {db.driver_message(exc, database)}") from None


def sqlite_revision(conn) -> str | None:
    """A SQLite database's schema revision (Alembic's version table), as
    :func:`.db.current_revision` reads it; None if it has none."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'").first() is None:
        return None
    rows = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version").all()]
    if len(rows) > 1:
        raise DatabaseError(f"the database has several schema revisions ({', '.join(sorted(rows))})")
    return rows[0] if rows else None
