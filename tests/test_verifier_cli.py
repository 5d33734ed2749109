"""The verifier's command line, end to end with click's runner: server init, user add, token import
of PSKC files (built here with python-pskc itself, plain and with a pre-shared key), link, validate
(exit codes 0/1/2/3), lost + backup codes, resync, unlock, audit, --json, and one clear line for bad
input with nothing written. On SQLite and PostgreSQL (``KEYFOB_DB`` is the ``db`` fixture)."""

import base64
import json
import stat
import time

import databases
import pskc
import pyotp
import pytest
from click.testing import CliRunner
from keyfob.cli import main
from keyfob.serials import make_serial

SEED = bytes(range(1, 21))
SEED_B = bytes(range(101, 133))
PSK = bytes(range(16))
PW = "pw ends in 1234"


@pytest.fixture
def env(tmp_path, db, monkeypatch):
    monkeypatch.delenv("KEYFOB_KEY", raising=False)
    e = {
        "KEYFOB_DB": db,
        "KEYFOB_KEY_FILE": str(tmp_path / "keys" / "v.key"),
        "KEYFOB_ARGON2_PROFILE": "fast",
    }
    for k, val in e.items():
        monkeypatch.setenv(k, val)
    return tmp_path


def run(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def pskc_file(path, tokens, psk=None):
    """A PSKC file written by python-pskc directly (independent of keyfob.formats)."""
    p = pskc.PSKC()
    for serial, mode, seed, digits, algo in tokens:
        fields = {
            "id": serial,
            "serial": serial,
            "manufacturer": "keyfob",
            "algorithm": f"urn:ietf:params:xml:ns:keyprov:pskc:{mode}",
            "algorithm_suite": "HMAC-SHA256" if algo == "sha256" else "HMAC-SHA1",
            "response_encoding": "DECIMAL",
            "response_length": digits,
            "secret": seed,
        }
        if mode == "hotp":
            fields["counter"] = 0
        else:
            fields["time_interval"] = 30
        p.add_key(**fields)
    if psk is not None:
        p.encryption.setup_preshared_key(key=psk, algorithm="aes128-cbc", key_name="transport")
    p.write(str(path))
    return path


def test_full_flow(env):
    s1, s2 = make_serial(11), make_serial(12)
    r = run("server", "init")
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE((env / "keys" / "v.key").stat().st_mode) == 0o600
    assert run("user", "add", "alice", "--password-stdin", input=PW + "\n").exit_code == 0
    (env / "psk.hex").write_text(PSK.hex())
    (env / "psk.hex").chmod(0o600)  # key files readable by others are refused
    pskc_file(env / "seeds.pskc", [(s1, "hotp", SEED, 6, "sha1"), (s2, "totp", SEED_B, 8, "sha256")], psk=PSK)
    r = run("token", "import", env / "seeds.pskc", "--psk-file", env / "psk.hex", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"imported": [s1, s2]}

    h = pyotp.HOTP(base64.b32encode(SEED).decode())
    r = run("token", "link", "alice", s1, h.at(0), "--description", "blue ring")
    assert r.exit_code == 0, r.output
    r = run("validate", "alice", "-", input=PW + h.at(1) + "\n")
    assert r.exit_code == 0 and "accepted" in r.stdout
    r = run("validate", "alice", "-", "--json", input=PW + h.at(1) + "\n")  # replay
    assert r.exit_code == 1 and json.loads(r.stdout) == {"accepted": False}  # all a relying party learns
    r = run("validate", "alice", "-", "--json", "--explain", input=PW + h.at(1) + "\n")  # the admin asks
    assert r.exit_code == 1
    assert json.loads(r.stdout) == {"accepted": False, "reason": "replay", "serial": s1}
    assert run("validate", "alice", PW, h.at(2)).exit_code == 0
    assert run("validate", "alice", h.at(3), "--code-only").exit_code == 0

    # resync from 500 presses ahead, then unlock after a lockout
    r = run("token", "resync", s1, h.at(500), h.at(501), "--json")
    assert r.exit_code == 1  # beyond the narrow search
    r = run("token", "resync", s1, h.at(500), h.at(501), "--wide", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["accepted"] is True
    for _ in range(10):
        assert run("validate", "alice", "000000", "--code-only").exit_code == 1
    toks = {t["serial"]: t for t in json.loads(run("token", "list", "--json").stdout)}
    assert toks[s1]["locked"] is True and toks[s1]["counter"] == 502 and toks[s1]["user"] == "alice"
    assert toks[s2]["state"] == "unassigned" and "seed" not in toks[s2]
    r = run("validate", "alice", h.at(502), "--code-only", "--json", "--explain")
    assert r.exit_code == 1 and json.loads(r.stdout)["reason"] in ("locked", "throttled")
    assert run("token", "unlock", s1).exit_code == 0

    # lost token: backup codes, each once
    r = run("token", "lost", s1, "--json")
    assert r.exit_code == 0
    codes = json.loads(r.stdout)["backup_codes"]
    assert len(codes) == 10
    assert run("validate", "alice", h.at(502), "--code-only").exit_code == 1
    assert run("validate", "alice", "-", input=PW + codes[0] + "\n").exit_code == 0
    assert run("validate", "alice", "-", input=PW + codes[0] + "\n").exit_code == 1
    r = run("backup-codes", "alice", "--count", "3", "--json")
    assert len(json.loads(r.stdout)["backup_codes"]) == 3

    # people's tables and the audit log
    r = run("token", "list")
    assert r.exit_code == 0 and s1 in r.stdout and "lost" in r.stdout
    r = run("user", "list")
    assert "alice" in r.stdout
    r = run("audit", "--json", "--limit", "1000")
    entries = json.loads(r.stdout)
    actions = {e["action"] for e in entries}
    assert {
        "server-init",
        "user-add",
        "token-import",
        "token-link",
        "validate",
        "token-resync",
        "token-unlock",
        "token-lost",
        "backup-codes",
    } <= actions
    assert run("audit").exit_code == 0
    assert run("user", "disable-2fa", "alice").exit_code == 0
    # alice's failures of the last seconds (past user_rate_limit) keep a password-only login in
    # back-off... Its first steps are 1 and 2 s, which a loaded machine may spend on the steps
    # above: so wait (if need be) until a wrong password is checked again, which is one more failure
    # past the limit and starts a longer back-off at once (a first failure would be free)
    for _ in range(100):
        said = run("validate", "alice", "-", "--explain", input="not her password\n").stderr
        if said != "refused (throttled)\n":
            break
        time.sleep(0.1)
    assert said == "refused (wrong-password)\n"
    assert run("validate", "alice", "-", "--explain", input=PW + "\n").stderr == "refused (throttled)\n"
    # ...until an admin sets her password (which clears her back-off)
    assert run("user", "passwd", "alice", "--password-stdin", input=PW + "\n").exit_code == 0
    assert run("validate", "alice", "-", input=PW + "\n").exit_code == 0


def test_bad_input_one_line_nonzero_nothing_written(env, db):
    s1 = make_serial(21)
    assert run("server", "init").exit_code == 0
    assert run("user", "add", "bob", "--password-stdin", input=PW + "\n").exit_code == 0
    pskc_file(env / "plain.pskc", [(s1, "hotp", SEED, 6, "sha1")])
    assert run("token", "import", env / "plain.pskc").exit_code == 0
    h = pyotp.HOTP(base64.b32encode(SEED).decode())
    assert run("token", "link", "bob", s1, h.at(0)).exit_code == 0

    pskc_file(env / "enc.pskc", [(make_serial(22), "hotp", SEED, 6, "sha1")], psk=PSK)
    data = (env / "enc.pskc").read_bytes()
    (env / "truncated.pskc").write_bytes(data[: len(data) // 2])
    (env / "garbage.bin").write_bytes(b"\x00\x01\x02 not a seed file \xff")
    (env / "wrong.hex").write_text(bytes(range(16, 32)).hex())
    (env / "wrong.hex").chmod(0o600)
    (env / "other.key").write_text("A" * 43 + "=\n")
    (env / "other.key").chmod(0o600)
    (env / "huge.csv").write_text(f"{make_serial(23)},{SEED.hex()},hotp,6,{2**63}\n")
    (env / "fine.csv").write_text(f"{make_serial(24)},{SEED.hex()},hotp,6,0\n")
    (env / "fine.txt").write_text(
        f"otpauth://hotp/x:{make_serial(25)}?secret={base64.b32encode(SEED).decode()}&counter=0\n"
    )
    (env / "notes.txt").write_text("not a database\n")
    (env / "notes.txt").chmod(0o600)
    (env / "fake.db").write_bytes(b"SQLite format 3\x00" + b"\x07" * 3000)
    (env / "fake.db").chmod(0o600)
    bad_serial = s1[:-1] + str((int(s1[-1]) + 1) % 10)
    before = databases.dump(db)
    cases = [
        ("token", "link", "bob", bad_serial, "123456"),
        ("token", "unlock", bad_serial),
        ("token", "import", env / "truncated.pskc", "--psk-file", env / "wrong.hex"),
        ("token", "import", env / "enc.pskc", "--psk-file", env / "wrong.hex"),
        ("token", "import", env / "enc.pskc"),
        ("token", "import", env / "garbage.bin"),
        ("token", "import", env / "missing.pskc"),
        ("user", "list", "--key-file", env / "other.key"),
        ("audit", "--db", env / "nope.db"),
        ("token", "import", env / "huge.csv"),  # a counter that does not fit the database
        ("audit", "--db", env / "notes.txt"),  # not SQLite at all
        ("audit", "--db", env / "fake.db"),  # SQLite's magic, then garbage: SQLite itself refuses
        ("audit", "--db", env),  # a directory
        ("token", "import", env / "fine.csv", "--key", PSK.hex()),  # CSV is never encrypted
        ("token", "import", env / "fine.txt", "--passphrase", "pass phrase"),  # nor are URI files
        ("token", "import", env / "fine.csv", "--psk-file", env / "wrong.hex"),
        ("user", "add", "bob"),  # exists: refused before a password is read (none is given here)
        ("user", "add", "bad name!"),
        ("user", "passwd", "nobody"),
        ("token", "resync", s1, "123456", "654321", "--user", "nobody"),
        ("token", "resync", s1, "123456", "654321", "--password-stdin"),
        ("server", "config", "--set", "max_fail=0"),
        ("server", "config", "--set", "no_such_setting=1"),
    ]
    needles = {
        ("token", "import", env / "huge.csv"): "2**63",
        ("audit", "--db", env / "notes.txt"): "not a keyfob database",
        ("audit", "--db", env / "fake.db"): "not a keyfob database",
        ("audit", "--db", env): "is a directory",
        ("token", "import", env / "fine.csv", "--key", PSK.hex()): "never encrypted",
        ("token", "import", env / "fine.txt", "--passphrase", "pass phrase"): "never encrypted",
        ("token", "import", env / "fine.csv", "--psk-file", env / "wrong.hex"): "never encrypted",
        ("user", "add", "bob"): "already exists",
        ("user", "passwd", "nobody"): "unknown user",
        ("token", "resync", s1, "123456", "654321", "--user", "nobody"): "unknown user",
    }
    kinds = {2: "bad-input", 1: "refused", 3: "unavailable"}  # README, "Exit codes and errors"
    for args in cases:
        # a database that is not there or not keyfob's: unavailable; a name taken: refused
        code = 3 if args[0] == "audit" else 1 if args == ("user", "add", "bob") else 2
        r = run(*args)
        assert r.exit_code == code, (args, r.output)
        err = r.stderr.strip()
        assert err.startswith("error: ") and "\n" not in err, (args, err)
        assert "Traceback" not in r.output
        assert PW not in r.output and SEED.hex() not in r.output
        assert needles.get(args, "") in err, (args, err)
        # with --json the same error is also one JSON object on stdout, with the same exit code
        r = run(*args, "--json")
        assert r.exit_code == code, (args, r.output)
        want = {"error": {"kind": kinds[code], "message": err.removeprefix("error: ")}, "exit": code}
        assert json.loads(r.stdout) == want, (args, r.stdout)
    assert databases.dump(db) == before
    assert (env / "notes.txt").read_text() == "not a database\n"
    # at a login, an unknown user or a malformed code is a refusal like any other: one line, exit 1
    for args in [
        ("validate", "nobody", PW + "123456"),
        ("validate", "bob", PW, "12a456"),
        ("validate", "bob", PW, "1234567"),
        ("validate", "bob", h.at(1) + "x", "--code-only"),
    ]:
        r = run(*args)
        assert (r.exit_code, r.stdout, r.stderr) == (1, "", "refused\n"), args


def test_json_for_every_command_that_changes_a_token_or_a_user(env):
    s1 = make_serial(31)
    assert run("server", "init", "--json").exit_code == 0
    r = run("user", "add", "cat", "--password-stdin", "--json", input=PW + "\n")
    assert json.loads(r.stdout) == {"user": "cat", "twofa": True}
    r = run("user", "passwd", "cat", "--password-stdin", "--json", input=PW + "x\n")
    assert r.exit_code == 0 and json.loads(r.stdout) == {"user": "cat", "password_changed": True}
    assert json.loads(run("user", "disable-2fa", "cat", "--json").stdout) == {"user": "cat", "twofa": False}
    assert json.loads(run("user", "enable-2fa", "cat", "--json").stdout) == {"user": "cat", "twofa": True}
    pskc_file(env / "p.pskc", [(s1, "hotp", SEED, 6, "sha1")])
    assert run("token", "import", env / "p.pskc").exit_code == 0
    h = pyotp.HOTP(base64.b32encode(SEED).decode())
    assert run("token", "link", "cat", s1, h.at(0)).exit_code == 0
    for _ in range(10):
        run("validate", "cat", "000000", "--code-only")
    steps = [
        ("unlock", {"state": "active", "user": "cat", "locked": False}),
        ("disable", {"state": "disabled", "user": "cat", "locked": False}),
        ("enable", {"state": "active", "user": "cat", "locked": False}),
        ("unlink", {"state": "unassigned", "user": None, "locked": False}),
        ("revoke", {"state": "revoked", "user": None, "locked": False}),
    ]
    for cmd, want in steps:
        r = run("token", cmd, s1, "--json")
        assert r.exit_code == 0, (cmd, r.output)
        assert json.loads(r.stdout) == {"serial": s1, **want}, cmd
    r = run("token", "enable", s1, "--json")  # not allowed for a revoked token
    assert r.exit_code == 1 and "revoked" in json.loads(r.stdout)["error"]["message"]  # refused


def test_self_service_resync_on_the_command_line(env):
    s1, s2 = make_serial(41), make_serial(42)
    assert run("server", "init").exit_code == 0
    for name in ("dora", "emil"):
        assert run("user", "add", name, "--password-stdin", input=PW + "\n").exit_code == 0
    pskc_file(env / "p.pskc", [(s1, "hotp", SEED, 6, "sha1"), (s2, "hotp", SEED_B, 6, "sha1")])
    assert run("token", "import", env / "p.pskc").exit_code == 0
    h = pyotp.HOTP(base64.b32encode(SEED).decode())
    h2 = pyotp.HOTP(base64.b32encode(SEED_B).decode())
    assert run("token", "link", "dora", s1, h.at(0)).exit_code == 0
    assert run("token", "link", "emil", s2, h2.at(0)).exit_code == 0

    args = ("token", "resync", s1, h.at(30), h.at(31), "--user", "dora", "--password-stdin", "--json")
    r = run(*args, input="wrong password\n")
    assert r.exit_code == 1 and json.loads(r.stdout)["reason"] == "wrong-password"
    r = run("token", "resync", s1, h.at(30), h.at(31), "--user", "dora", "--wide")  # the wide search: admin only
    assert r.exit_code == 2 and "admin" in r.stderr
    # someone else's token: refused before the password is read
    r = run("token", "resync", s2, h2.at(30), h2.at(31), "--user", "dora", "--password-stdin")
    assert r.exit_code == 1 and "does not belong to user 'dora'" in r.stderr
    r = run("token", "resync", s1, h.at(30), h.at(32), "--user", "dora", "--password-stdin", input=PW + "\n")
    assert r.exit_code == 1 and "wrong-code" in r.stderr
    r = run(*args, input=PW + "\n")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"accepted": True, "user": "dora", "serial": s1, "reason": "ok"}
    assert run("validate", "dora", PW, h.at(32)).exit_code == 0
    rows = json.loads(run("audit", "--action", "token-resync", "--json").stdout)
    assert [(e["actor"], e["result"], e["detail"]) for e in rows] == [
        ("dora", "ok", None),
        ("dora", "fail", "wrong-code"),
        ("dora", "fail", "wrong-password"),
    ]
    assert json.loads(run("token", "list", "--json").stdout)[1]["counter"] == 1  # emil's: untouched


def test_policy_options_at_init_and_server_config(env):
    r = run("server", "init", "--max-fail", "3", "--lock-seconds", "never", "--hotp-window", "4", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["policy"]["max_fail"] == 3
    shown = json.loads(run("server", "config", "--json").stdout)
    assert shown["max_fail"] == 3 and shown["lock_seconds"] is None and shown["hotp_window"] == 4
    assert shown["totp_window"] == 1 and shown["user_rate_limit"] == 10  # the defaults for the rest
    r = run("server", "config", "--set", "max-fail=5", "--set", "lock_seconds=120", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["max_fail"] == 5 and json.loads(r.stdout)["lock_seconds"] == 120
    r = run("server", "config")
    assert r.exit_code == 0 and "max_fail" in r.stdout and "120" in r.stdout
    rows = json.loads(run("audit", "--action", "server-config", "--json").stdout)
    assert sorted(e["detail"] for e in rows) == ["lock_seconds None -> 120", "max_fail 3 -> 5"]

    # the stored policy is what every later command applies: 5 wrong codes lock, not 10
    s1 = make_serial(51)
    assert run("user", "add", "finn", "--password-stdin", input=PW + "\n").exit_code == 0
    pskc_file(env / "p.pskc", [(s1, "hotp", SEED, 6, "sha1")])
    assert run("token", "import", env / "p.pskc").exit_code == 0
    h = pyotp.HOTP(base64.b32encode(SEED).decode())
    assert run("token", "link", "finn", s1, h.at(0)).exit_code == 0
    for _ in range(5):
        run("validate", "finn", "000000", "--code-only")
    r = run("validate", "finn", h.at(1), "--code-only", "--json", "--explain")
    assert json.loads(r.stdout)["reason"] == "locked"
    assert run("server", "init", "--max-fail", "0", "--db", env / "other.db").exit_code == 2


@databases.sqlite_only
def test_database_made_by_the_cli_is_private(env):
    assert run("server", "init").exit_code == 0
    assert run("user", "add", "gil", "--password-stdin", input=PW + "\n").exit_code == 0
    assert stat.S_IMODE((env / "v.db").stat().st_mode) == 0o600
    (env / "v.db").chmod(0o640)
    r = run("user", "list")
    assert r.exit_code == 3 and "accessible by others" in r.stderr and "chmod 600" in r.stderr


def test_a_database_url_password_is_not_printed(env):
    url = "postgresql://admin:Hunter2secret@127.0.0.1:1/keyfob"
    for args in (("server", "init"), ("user", "list"), ("audit", "--json")):
        r = run(*args, "--db", url)
        assert r.exit_code == 3, r.output  # unavailable
        assert "Hunter2secret" not in r.output and "admin" in r.stderr, r.output


def test_user_help_desk_gives_and_takes_the_web_help_desk(env, db):
    from keyfob.verifier import Verifier
    from keyfob.verifier.accounts import Accounts

    assert run("server", "init").exit_code == 0
    assert run("user", "add", "hal", "--password-stdin", input=PW + "\n").exit_code == 0
    r = run("user", "help-desk", "hal")
    assert r.exit_code == 0 and r.stdout == "help desk on for hal\n"
    with Verifier.open(db, key_file=env / "keys" / "v.key") as v:
        assert Accounts(v).account("hal").admin
    assert json.loads(run("user", "help-desk", "hal", "--off", "--json").stdout) == {"user": "hal", "help_desk": False}
    with Verifier.open(db, key_file=env / "keys" / "v.key") as v:
        a = Accounts(v).account("hal")
        assert not a.admin and a.generation == 1  # taken away: the web sessions end too
        assert [e.user for e in v.audit(action="user-admin-on") + v.audit(action="user-admin-off")] == ["hal", "hal"]
    r = run("user", "help-desk", "nobody")
    assert r.exit_code != 0 and len(r.output.strip().splitlines()) == 1
