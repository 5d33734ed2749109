"""The verifier's command line, end to end with click's runner: server init, user add, token import
of PSKC files (built here with python-pskc itself, plain and with a pre-shared key), link, validate
(exit codes 0/1/2), lost + backup codes, resync, unlock, audit, --json, and one clear line for bad
input with nothing written."""

import base64
import json
import sqlite3
import stat

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
def env(tmp_path, monkeypatch):
    monkeypatch.delenv("KEYFOB_KEY", raising=False)
    e = {
        "KEYFOB_DB": str(tmp_path / "v.db"),
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


def dump(path):
    con = sqlite3.connect(path)
    try:
        return {
            t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
            for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    finally:
        con.close()


def test_full_flow(env):
    s1, s2 = make_serial(11), make_serial(12)
    r = run("server", "init")
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE((env / "keys" / "v.key").stat().st_mode) == 0o600
    assert run("user", "add", "alice", "--password-stdin", input=PW + "\n").exit_code == 0
    (env / "psk.hex").write_text(PSK.hex())
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
    assert r.exit_code == 1
    assert json.loads(r.stdout) == {"accepted": False, "user": "alice", "reason": "wrong-code", "serial": s1}
    assert run("validate", "alice", PW, h.at(2)).exit_code == 0
    assert run("validate", "alice", h.at(3), "--code-only").exit_code == 0

    # resync from 500 presses ahead, then unlock after a lockout
    r = run("token", "resync", s1, h.at(500), h.at(501), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["accepted"] is True
    for _ in range(10):
        assert run("validate", "alice", "000000", "--code-only").exit_code == 1
    toks = {t["serial"]: t for t in json.loads(run("token", "list", "--json").stdout)}
    assert toks[s1]["locked"] is True and toks[s1]["counter"] == 502 and toks[s1]["user"] == "alice"
    assert toks[s2]["state"] == "unassigned" and "seed" not in toks[s2]
    r = run("validate", "alice", h.at(502), "--code-only", "--json")
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
    assert run("validate", "alice", "-", input=PW + "\n").exit_code == 0


def test_bad_input_one_line_nonzero_nothing_written(env):
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
    (env / "other.key").write_text("A" * 43 + "=\n")
    (env / "other.key").chmod(0o600)
    bad_serial = s1[:-1] + str((int(s1[-1]) + 1) % 10)
    before = dump(env / "v.db")
    cases = [
        ("validate", "nobody", PW + "123456"),
        ("validate", "bob", PW, "12a456"),
        ("validate", "bob", PW, "1234567"),
        ("validate", "bob", h.at(1) + "x", "--code-only"),
        ("token", "link", "bob", bad_serial, "123456"),
        ("token", "unlock", bad_serial),
        ("token", "import", env / "truncated.pskc", "--psk-file", env / "wrong.hex"),
        ("token", "import", env / "enc.pskc", "--psk-file", env / "wrong.hex"),
        ("token", "import", env / "enc.pskc"),
        ("token", "import", env / "garbage.bin"),
        ("token", "import", env / "missing.pskc"),
        ("user", "list", "--key-file", env / "other.key"),
        ("audit", "--db", env / "nope.db"),
    ]
    for args in cases:
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        err = r.stderr.strip()
        assert err.startswith("error: ") and "\n" not in err, (args, err)
        assert "Traceback" not in r.output
        assert PW not in r.output and SEED.hex() not in r.output
    assert dump(env / "v.db") == before
