"""PostgreSQL's own side of the verifier, on the throwaway server: the URLs a user types reach it
through psycopg 3, and a server or database that cannot be reached is one clear line and exit 2
(the rest of the suite runs on PostgreSQL through the ``db`` fixture)."""

import json

import databases
import pgserver
import pytest
from click.testing import CliRunner
from keyfob.cli import main
from keyfob.verifier import DatabaseError, Verifier

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


def test_a_postgresql_that_cannot_be_reached_is_one_line(db, databases, tmp_path):
    live = f"host={databases.server.folder}&port={pgserver.PORT}"  # the running server's socket
    cases = {
        f"postgresql://keyfob:Pa55word@/postgres?host={tmp_path}": "No such file",  # no server there
        f"postgresql://keyfob:Pa55word@/no_such_db?{live}": 'database "no_such_db" does not exist',
        f"postgresql://nobody_here:Pa55word@/postgres?{live}": 'role "nobody_here" does not exist',
    }
    for url, needle in cases.items():
        for args in (("server", "init"), ("user", "list"), ("audit", "--json")):
            r = run(*args, "--db", url)
            assert r.exit_code == 2, (url, r.output)
            err = r.stderr.strip()
            assert err.startswith("error: cannot open database ") and "\n" not in err, err
            assert needle in err and "Pa55word" not in r.output, err
            assert "Traceback" not in r.output
        with pytest.raises(DatabaseError) as caught:
            Verifier.open(url, key=b"P" * 32)
        assert "\n" not in str(caught.value) and "Pa55word" not in str(caught.value)
