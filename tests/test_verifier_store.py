"""The login path's SQLite store (keyfob.verifier.sql.SqliteStore), as a long-running server meets
it: a transaction whose COMMIT fails leaves no lock behind, and threads that come and go (a thread
pool retiring its idle threads) do not leave connections open."""

from __future__ import annotations

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
