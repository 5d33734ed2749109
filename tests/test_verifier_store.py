"""The login path's SQLite store (keyfob.verifier.sql.SqliteStore), as a long-running server meets
it: a transaction whose COMMIT fails leaves no lock behind, and threads that come and go (a thread
pool retiring its idle threads) do not leave connections open."""

from __future__ import annotations

import contextlib
import os
import threading

import pytest
from keyfob.verifier import sql


@pytest.fixture
def store(tmp_path):
    st = sql.open_store(str(tmp_path / "x.db"), must_exist=False, wait=0.5)
    st.write(lambda c: c.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
    st.write(
        lambda c: c.execute("CREATE TABLE child (pid INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
    )
    yield st
    st.close()


def test_a_failed_commit_leaves_the_database_writable(store):
    # a deferred foreign key fails at COMMIT: it stands for any COMMIT that fails (disk full, I/O)
    with pytest.raises(Exception, match="FOREIGN KEY"):
        store.write(lambda c: c.execute("INSERT INTO child VALUES (42)"))
    store.write(lambda c: c.execute("INSERT INTO parent VALUES (1)"))  # same thread
    errors = []

    def other():
        try:
            store.write(lambda c: c.execute("INSERT INTO parent VALUES (2)"))
        except Exception as exc:  # noqa: BLE001 - the test reports whatever it was
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors == []
    with store.read() as c:
        assert [r[0] for r in c.execute("SELECT id FROM parent ORDER BY id").all()] == [1, 2]
        assert c.execute("SELECT count(*) FROM child").scalar() == 0


def _open_files(path: str) -> int:
    fds = os.listdir("/proc/self/fd")
    return sum(os.path.realpath(f"/proc/self/fd/{fd}") == path for fd in fds if os.path.exists(f"/proc/self/fd/{fd}"))


def test_threads_that_come_and_go_leave_no_connections_open(store, tmp_path):
    path = os.path.realpath(tmp_path / "x.db")
    for i in range(40):  # a new thread for each transaction, each gone after it
        insert = lambda c, i=i: c.execute("INSERT INTO parent VALUES (:i)", {"i": i})  # noqa: E731
        t = threading.Thread(target=store.write, args=(insert,))
        t.start()
        t.join()
    assert _open_files(path) <= sql.IDLE_MAX
    store.close()
    assert _open_files(path) == 0


def test_a_servers_store_checkpoints_on_a_thread_of_its_own(tmp_path, monkeypatch):
    """A server's store turns its connections' own checkpoints off (none inside a login's commit)
    and a thread of its own copies the log into the database file instead, restarting the log once
    it is long. 2,500 commits of 3 KB write ~7,600 pages of log, under SQLite's own checkpoint
    interval here (10,000): only that thread can have put them into the file while the store is
    open (without it the file stays at 4 KB)."""
    import time

    from keyfob.verifier import checkpoints

    monkeypatch.setattr(checkpoints, "EVERY_COMMITS", 50)
    monkeypatch.setattr(checkpoints, "RESTART_PAGES", 500)
    path = str(tmp_path / "s.db")
    st = sql.open_store(path, must_exist=False, wait=0.5, serving=True)
    try:
        st.write(lambda c: c.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, detail BLOB)"))
        started = time.monotonic()
        for i in range(2500):
            st.write(lambda c: c.execute("INSERT INTO audit (detail) VALUES (randomblob(3000))"))
            if i % 100 == 0:
                time.sleep(0.001)  # logins come with gaps; a loop with none starves the thread of the GIL
        # rounds set off by the commits (every 50), not only the idle one once a second
        assert st.checkpoints.rounds > time.monotonic() - started + 1
        with st.read() as c:
            assert c.execute("PRAGMA wal_autocheckpoint").scalar() == 0
        deadline = time.monotonic() + 10
        while os.path.getsize(path) < 2500 * 3000 and time.monotonic() < deadline:
            time.sleep(0.1)  # the idle round (once a second) copies the rest
        assert os.path.getsize(path) >= 2500 * 3000
        assert st.checkpoints.restarts > 0
    finally:
        st.close()
    assert not st.checkpoints._thread.is_alive()


def test_a_servers_admin_engine_leaves_checkpoints_to_the_thread(tmp_path):
    """The admin calls' SQLAlchemy connections in a server: with SQLite's own checkpoints on,
    an admin write that crossed the interval would copy the whole log inside its COMMIT."""
    from sqlalchemy import text

    path = str(tmp_path / "s.db")
    st = sql.open_store(path, must_exist=False, wait=0.5, serving=True)
    try:
        with st.engine().connect() as c:
            assert c.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 0
    finally:
        st.close()
    one_shot = sql.open_store(path, must_exist=True, wait=0.5)
    try:
        with one_shot.engine().connect() as c:
            assert c.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 10_000
    finally:
        one_shot.close()


def test_a_one_shot_store_keeps_sqlites_own_checkpoints(store):
    assert store.checkpoints is None
    with store.read() as c:
        assert c.execute("PRAGMA wal_autocheckpoint").scalar() == 10_000


def test_the_http_servers_store_is_a_servers(tmp_path, monkeypatch):
    from keyfob.server.app import from_env
    from keyfob.verifier import Verifier

    db, key = str(tmp_path / "v.db"), tmp_path / "v.key"
    Verifier.init(db, key_file=key).close()
    monkeypatch.setenv("KEYFOB_DB", db)
    monkeypatch.setenv("KEYFOB_KEY_FILE", str(key))
    verifier = from_env().state.verifier
    try:
        assert verifier._db.checkpoints is not None
    finally:
        verifier.close()


def _synchronous(conn) -> int:
    return conn.execute("PRAGMA synchronous").scalar()


def test_login_connections_leave_the_sync_to_their_store_and_admin_ones_sync_in_the_commit(tmp_path, store):
    """The login path's connections do not sync inside a COMMIT (NORMAL, 1): their store syncs
    the log after it, out of the write lock (tests/test_verifier_power_cut.py cuts the power to
    show it); the engine's connections (admin operations) do (FULL, 2). For a one-shot store and a
    server's alike."""
    from sqlalchemy import text

    with store.read() as c:
        assert _synchronous(c) == 1
    with store.engine().connect() as c:
        assert c.execute(text("PRAGMA synchronous")).scalar() == 2
    st = sql.open_store(str(tmp_path / "s.db"), must_exist=False, wait=0.5, serving=True)
    try:
        with st.read() as c:
            assert _synchronous(c) == 1
        with st.engine().connect() as c:
            assert c.execute(text("PRAGMA synchronous")).scalar() == 2
    finally:
        st.close()


@pytest.fixture
def serving(tmp_path):
    st = sql.open_store(str(tmp_path / "s.db"), must_exist=False, wait=5, serving=True)
    st.write(lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    yield st
    st.close()


def test_a_servers_writes_share_their_syncs(serving, monkeypatch):
    """Sixteen threads write while each sync of the log takes 10 ms: every write returns only
    after a sync that began once its row was committed had ended, and one sync serves the commits
    made while the one before it ran (far fewer syncs than writes)."""
    import sqlite3
    import time

    from keyfob.verifier import logsync

    real, syncs = logsync._datasync, []  # (rows committed when a sync began, when it ended)

    def slow(fd):
        with contextlib.closing(sqlite3.connect(serving.path)) as c:
            rows = {r[0] for r in c.execute("SELECT id FROM t")}
        time.sleep(0.01)
        real(fd)
        syncs.append((rows, time.monotonic()))

    monkeypatch.setattr(logsync, "_datasync", slow)
    unsynced: list = []

    def writer(k):
        for i in range(5):
            v = k * 10 + i
            serving.write(lambda c, v=v: c.execute("INSERT INTO t VALUES (:v)", {"v": v}))
            returned = time.monotonic()
            if not any(v in rows and ended <= returned for rows, ended in list(syncs)):
                unsynced.append(v)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert unsynced == []
    assert 1 <= len(syncs) < 40  # 80 writes


_BROKEN = (
    r"\Acannot sync the database's log to disk: Input/output error"
    r" \(every sync fails until the server is restarted\)\Z"
)


def test_a_failed_sync_fails_that_write_and_every_later_one(serving, monkeypatch):
    """The disk refuses a sync: the write raises :class:`DatabaseError` (one line, the cause)
    rather than return as if its commit were safe. The kernel has dropped the pages it could not
    write, so a later sync that succeeds would prove nothing: every later write fails too."""
    import errno

    from keyfob.verifier import logsync
    from keyfob.verifier.errors import DatabaseError

    real, fail, calls = logsync._datasync, [True], []

    def flaky(fd):
        calls.append(fd)
        if fail.pop() if fail else False:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(logsync, "_datasync", flaky)
    for v in (1, 2):
        with pytest.raises(DatabaseError, match=_BROKEN):
            serving.write(lambda c, v=v: c.execute("INSERT INTO t VALUES (:v)", {"v": v}))
    assert len(calls) == 1  # the second is refused without asking the disk


def test_a_sync_that_dies_answers_its_waiters_and_every_later_one(serving, monkeypatch):
    """Anything but an OSError in the sync thread (a bug) must not leave writers waiting forever:
    the write waiting for it fails, and so does every later one, at once."""
    from keyfob.verifier import logsync
    from keyfob.verifier.errors import DatabaseError

    def bug(fd):
        raise RuntimeError("a bug")

    monkeypatch.setattr(logsync, "_datasync", bug)
    for v in (1, 2):
        with pytest.raises(DatabaseError, match=r"the log's sync stopped \(RuntimeError: a bug\)"):
            serving.write(lambda c, v=v: c.execute("INSERT INTO t VALUES (:v)", {"v": v}))


@pytest.mark.parametrize("serving_store", [False, True], ids=["one-shot", "server"])
def test_each_write_syncs_the_real_log_after_its_commit(tmp_path, monkeypatch, serving_store):
    """A write returns after a sync of the log that holds its commit: the log beside the real
    file when the database is named through a symlink (SQLite follows it), for a one-shot store
    (synced in the writer's thread) and a server's."""
    import sqlite3

    from keyfob.verifier import logsync

    (tmp_path / "real").mkdir()
    real_db, link = tmp_path / "real" / "x.db", tmp_path / "link.db"
    st = sql.open_store(str(real_db), must_exist=False, wait=5)
    st.write(lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    st.close()
    link.symlink_to(real_db)
    real, seen = logsync._datasync, []

    def watched(fd):
        with contextlib.closing(sqlite3.connect(real_db)) as c:
            rows = [r[0] for r in c.execute("SELECT id FROM t")]
        seen.append((os.fstat(fd).st_ino, rows, threading.current_thread() is writer))
        real(fd)

    monkeypatch.setattr(logsync, "_datasync", watched)
    writer = threading.current_thread()
    st = sql.open_store(str(link), must_exist=True, wait=5, serving=serving_store)
    try:
        st.write(lambda c: c.execute("INSERT INTO t VALUES (7)"))
        wal = os.stat(str(real_db) + "-wal").st_ino
    finally:
        st.close()
    assert not os.path.exists(str(link) + "-wal")
    assert seen and seen[-1][:2] == (wal, [7])
    assert seen[-1][2] is not serving_store  # a one-shot store syncs in the writer's thread


def test_write_now_runs_nothing_while_another_writer_holds_the_file(store):
    """``write_now`` (an event loop's write) gives up at once with nothing run, and leaves the
    pooled connection's busy timeout at the store's wait."""
    import sqlite3

    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    ran = []
    try:
        with pytest.raises(sql.WouldWait):
            store.write_now(lambda c: ran.append(c.execute("INSERT INTO parent VALUES (7)")))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert ran == []
    with store.read() as c:
        assert c.execute("PRAGMA busy_timeout").scalar() == int(store.wait * 1000)
        assert c.execute("SELECT count(*) FROM parent").scalar() == 0
    store.write_now(lambda c: c.execute("INSERT INTO parent VALUES (8)"))
    with store.read() as c:
        assert c.execute("SELECT id FROM parent").all() == [(8,)]


def test_write_now_does_not_wait_for_the_stores_own_writers(store):
    """A write of this store on a thread holds the turn (say, polling for another process's lock):
    the loop's write gives up at once, with nothing run, rather than wait for it."""
    ran = []
    assert store._turn.acquire(timeout=5)
    threading.Timer(0.3, store._turn.release).start()  # the other writer is done soon after
    with pytest.raises(sql.WouldWait):  # ... but the loop did not wait for it
        store.write_now(lambda c: ran.append(c.execute("INSERT INTO parent VALUES (9)")))
    assert ran == []
    assert store._turn.acquire(timeout=5)  # the timer's release happened: the turn is free again
    store._turn.release()


def test_nothing_in_write_now_waits_on_sqlites_busy_handler(store):
    """The loop's transaction runs with SQLite's busy timeout at 0 (a statement that met a lock
    would fail at once, and be run again on a thread), and the pooled connection gets its wait
    back after."""
    seen = []
    store.write_now(lambda c: seen.append(c.execute("PRAGMA busy_timeout").scalar()))
    assert seen == [0]
    with store.read() as c:
        assert c.execute("PRAGMA busy_timeout").scalar() == int(store.wait * 1000)


def test_write_now_does_not_wait_while_opening_a_connection(tmp_path):
    """With no idle connection, ``write_now`` opens one, and that set-up reads the file: while
    another process holds the file whole (SQLite's exclusive locking mode), it gives up at once
    with nothing run rather than wait out the store's lock wait on the event loop."""
    import sqlite3

    store = sql.open_store(str(tmp_path / "x.db"), must_exist=False, wait=30)
    try:
        store.write(lambda c: c.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        while store._idle:  # the next transaction opens a new connection
            store._idle.pop().close()
        holder = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        release = threading.Timer(0.5, lambda: (holder.execute("COMMIT"), holder.close()))
        release.start()  # soon after: a set-up that waited would then go on and run the insert
        ran = []
        try:
            with pytest.raises(sql.WouldWait):
                store.write_now(lambda c: ran.append(c.execute("INSERT INTO parent VALUES (7)")))
        finally:
            release.join()
        assert ran == []
        store.write_now(lambda c: c.execute("INSERT INTO parent VALUES (8)"))
        with store.read() as c:
            assert c.execute("SELECT id FROM parent").all() == [(8,)]
            assert c.execute("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        store.close()


def test_once_a_servers_store_has_used_the_file_no_other_process_can_hold_it_whole(tmp_path):
    """The premise of the event loop's reads (an API key's check): under WAL a read waits for no
    writer, and the one lock that would stop it, another connection holding the whole file
    (SQLite's exclusive locking mode), cannot be taken once a server's store has used the file:
    its connections stay open (the idle ones are kept, and the checkpoint thread's), and an open
    WAL connection keeps the file's shared memory in use."""
    import sqlite3

    path = str(tmp_path / "x.db")
    sql.open_store(path, must_exist=False, wait=0.5).close()  # the file, made
    store = sql.open_store(path, must_exist=True, wait=0.5, serving=True)
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        store.write(lambda c: c.execute("CREATE TABLE t (x)"))  # a server's first request
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            holder.execute("BEGIN EXCLUSIVE")
        with store.read() as c:
            assert c.execute("SELECT count(*) FROM t").scalar() == 0
    finally:
        holder.close()
        store.close()


@pytest.mark.parametrize("serving_store", [False, True], ids=["one-shot", "server"])
def test_a_library_login_syncs_once_after_its_last_commit_even_when_refused(tmp_path, monkeypatch, serving_store):
    """``Verifier.verify`` commits twice (the throttle's reservation, then the decision and its
    audit row) and syncs the log once, after the second: one sync puts both on disk. A login
    refused by an exception after a commit (invalid UTF-8: audited, then BadInput) is synced
    before it raises."""
    import base64
    import sqlite3

    import pyotp
    from keyfob.records import TokenRecord
    from keyfob.serials import make_serial
    from keyfob.verifier import BadInput, Policy, Verifier, logsync

    seed = bytes(range(3, 23))
    hotp = pyotp.HOTP(base64.b32encode(seed).decode())
    db, key_file = tmp_path / "v.db", tmp_path / "v.key"
    with Verifier.init(db, key_file=key_file, policy=Policy(password_profile="fast")) as v:
        v.import_records([TokenRecord(make_serial(7701), "hotp", "sha1", 6, seed)])
        v.add_user("ann", "password 1")
        assert v.link("ann", make_serial(7701), hotp.at(0)).accepted
    real, audited_at_sync = logsync._datasync, []

    def watched(fd):
        with contextlib.closing(sqlite3.connect(db)) as c:
            audited_at_sync.append(c.execute("SELECT count(*) FROM audit").fetchone()[0])
        real(fd)

    monkeypatch.setattr(logsync, "_datasync", watched)
    with Verifier.open(db, key_file=key_file, serving=serving_store) as v:
        with contextlib.closing(sqlite3.connect(db)) as c:
            before = c.execute("SELECT count(*) FROM audit").fetchone()[0]
        assert v.verify("ann", "password 1" + hotp.at(1)).accepted
        assert audited_at_sync == [before + 1]  # one sync, once the decision's row was in
        with pytest.raises(BadInput):
            v.verify("ann", "password 1\udcff" + hotp.at(2))
        assert audited_at_sync == [before + 1, before + 2]
