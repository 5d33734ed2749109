"""PostgreSQL's own side of the verifier, on the throwaway server: the URLs a user types reach it
through psycopg 3, and a server or database that cannot be reached is one clear line and exit 2
(the rest of the suite runs on PostgreSQL through the ``db`` fixture); a transaction PostgreSQL
aborts as a deadlock victim runs again."""

import json
import threading

import databases
import pytest
from click.testing import CliRunner
from keyfob.cli import main
from keyfob.verifier import DatabaseError, Verifier
from keyfob.verifier import db as vdb
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from bench import pgserver

pytestmark = databases.postgresql_only
PW = "postgres user pw 1"


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.delenv("KEYFOB_KEY", raising=False)
    monkeypatch.delenv("KEYFOB_DB", raising=False)
    monkeypatch.setenv("KEYFOB_KEY_FILE", str(tmp_path / "v.key"))
    monkeypatch.setenv("KEYFOB_ARGON2_PROFILE", "fast")


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.mark.parametrize("scheme", ["postgresql://", "postgres://", "postgresql+psycopg://"])
def test_the_cli_takes_a_postgresql_url(db, scheme):
    url = scheme + db.split("://", 1)[1]  # the same database, as a user may spell it
    assert run("server", "init", "--db", url).exit_code == 0
    assert run("user", "add", "pia", "--password-stdin", "--db", url, input=PW + "\n").exit_code == 0
    r = run("user", "list", "--json", "--db", db)  # and the data is in that database
    assert [u["user"] for u in json.loads(r.stdout)] == ["pia"]


def test_a_postgresql_that_cannot_be_reached_is_one_line_and_exit_3(db, databases, tmp_path):
    live = f"host={databases.server.folder}&port={pgserver.PORT}"  # the running server's socket
    cases = {
        f"postgresql://keyfob:Pa55word@/postgres?host={tmp_path}": "No such file",  # no server there
        f"postgresql://keyfob:Pa55word@/no_such_db?{live}": 'database "no_such_db" does not exist',
        f"postgresql://nobody_here:Pa55word@/postgres?{live}": 'role "nobody_here" does not exist',
    }
    for url, needle in cases.items():
        for args in (("server", "init"), ("user", "list"), ("audit", "--json")):
            r = run(*args, "--db", url)
            assert r.exit_code == 3, (url, r.output)  # unavailable (README, "Exit codes and errors")
            err = r.stderr.strip()
            assert err.startswith("error: cannot open database ") and "\n" not in err, err
            assert needle in err and "Pa55word" not in r.output, err
            assert "Traceback" not in r.output
        with pytest.raises(DatabaseError) as caught:
            Verifier.open(url, key=b"P" * 32)
        assert "\n" not in str(caught.value) and "Pa55word" not in str(caught.value)


def test_a_deadlock_victim_is_run_again(db, databases):
    """A write that PostgreSQL aborts as a deadlock victim is retried and then succeeds. The other
    side waits with a long deadlock_timeout, so the write's own session is the one that detects the
    circle and gives up (deadlock detection, no sleeping)."""
    engine = vdb.make_engine(db, must_exist=False)
    other = create_engine(vdb.to_url(db), poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id integer PRIMARY KEY, n integer)"))
        conn.execute(text("INSERT INTO t VALUES (1, 0), (2, 0)"))
    holds_2 = threading.Event()
    calls = []

    def fn(conn):  # row 2, then row 1: the opposite order of the other side
        calls.append(1)
        conn.execute(text("UPDATE t SET n = n + 1 WHERE id = 2"))
        holds_2.set()
        conn.execute(text("UPDATE t SET n = n + 1 WHERE id = 1"))
        return "done"

    before = databases.deadlocks(db)
    result = []
    with other.connect() as a:
        a.execute(text("SET deadlock_timeout = '60s'"))
        a.execute(text("BEGIN"))
        a.execute(text("UPDATE t SET n = n + 10 WHERE id = 1"))
        writer = threading.Thread(target=lambda: result.append(vdb.write(engine, fn)))
        writer.start()
        assert holds_2.wait(60)
        a.execute(text("UPDATE t SET n = n + 10 WHERE id = 2"))  # waits until the writer gives up
        a.execute(text("COMMIT"))
        writer.join(60)
    assert result == ["done"] and len(calls) == 2  # aborted once, run again
    with engine.connect() as conn:
        assert conn.execute(text("SELECT n FROM t ORDER BY id")).scalars().all() == [11, 11]
    assert databases.deadlocks(db) == before + 1
    engine.dispose()
    other.dispose()
