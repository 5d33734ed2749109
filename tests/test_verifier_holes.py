"""Issue 11, "Holes": the verifier as an attacker (and a skeptical admin) meets it.

Each test is written the way the issue's attacker tried it: stale TOTP codes through self-service
resync, a stranger keeping a user out, a double-clicked login, a database held by another process,
invalid UTF-8 on the command line, what a relying party learns from a refusal, unknown-user floods
and the audit table's growth, and the smaller holes of point 8. Codes come from pyotp; the clock is
injected (no sleeping, no timed assertion).
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import threading

import argon2
import pyotp
import pytest
from click.testing import CliRunner
from keyfob.cli import main
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.verifier import BadInput, DatabaseBusy, Policy, SeedFileError, Verifier, rules
from test_verifier_service import PW, SHA1_SEED, Clock, enrol, make, serial

KEY = b"H" * 32


@pytest.fixture
def clock():
    return Clock()


def totp():
    return pyotp.TOTP(base64.b32encode(SHA1_SEED).decode())


def hotp():
    return pyotp.HOTP(base64.b32encode(SHA1_SEED).decode())


# --- 1: stale TOTP codes through self-service resync ----------------------------------------------


def test_stale_phished_codes_do_not_resync_or_log_in(tmp_path, clock):
    v = make(tmp_path / "v.db", clock)
    s = enrol(v, "alice", "totp", SHA1_SEED)
    ref = totp()
    clock.t += 300
    # a phishing page collects three consecutive codes the real user typed, and never uses them
    t0 = clock.t
    c1, c2, c3 = (ref.at(t0 + 30 * i) for i in range(3))
    for later in (20 * 60, 6 * 3600):
        clock.t = t0 + later
        assert not v.resync(s, c1, c2, user="alice", password=PW).accepted, later
        assert not v.verify("alice", PW, c3).accepted, later
    assert v.token(s).drift == 0
    assert v.verify("alice", PW, ref.at(clock.t)).accepted  # the real user's current code still works
    # the wide search is the admin's, and even there a code before the newest accepted step is refused
    assert not v.resync(s, c1, c2, wide=True).accepted
    with pytest.raises(BadInput):
        v.resync(s, c1, c2, wide=True, user="alice", password=PW)
    v.close()


def test_self_service_resync_is_narrow_and_the_admins_wide(tmp_path, clock):
    v = make(tmp_path / "v.db", clock)
    s = enrol(v, "bob", "totp", SHA1_SEED)
    ref = totp()
    near = clock.t + 5 * 30  # the token's clock 5 steps fast: inside the narrow window
    assert v.resync(s, ref.at(near), ref.at(near + 30), user="bob", password=PW).accepted
    assert v.token(s).drift == 6
    far = clock.t + 3600  # an hour fast: only the admin's wide search finds it
    assert not v.resync(s, ref.at(far), ref.at(far + 30), user="bob", password=PW).accepted
    assert not v.resync(s, ref.at(far), ref.at(far + 30)).accepted
    assert v.resync(s, ref.at(far), ref.at(far + 30), wide=True).accepted
    h = enrol(v, "bob", "hotp", SHA1_SEED)
    assert not v.resync(h, hotp().at(500), hotp().at(501), user="bob", password=PW).accepted
    assert v.resync(h, hotp().at(30), hotp().at(31), user="bob", password=PW).accepted
    assert v.token(h).counter == 32
    v.close()


def test_a_resync_whose_reservation_is_written_twice_forgives_no_failure(tmp_path, clock, monkeypatch):
    """A write transaction may run again (a commit that failed, a deadlock victim on PostgreSQL:
    ``db.retrying``). The self-service resync's throttle reservation did that with the key already
    noted on the attempt, so the key was noted twice, given back twice, and one of the user's
    earlier failures was forgiven: a guesser's count went down by a resync."""
    v = make(tmp_path / "v.db", clock)
    s = enrol(v, "bob", "totp", SHA1_SEED)
    for _ in range(2):
        assert not v.verify("bob", "not the password", "000000").accepted

    def fails():
        with sqlite3.connect(tmp_path / "v.db") as c:
            return c.execute("SELECT fails FROM throttle WHERE key LIKE 'u:%'").fetchone()[0]

    assert fails() == 2
    write, failed_once = v._db.write, []

    def write_failing_once(fn):
        def run(conn):
            out = fn(conn)
            if not failed_once:
                failed_once.append(True)
                raise sqlite3.OperationalError("database is locked")  # after fn: its writes roll back
            return out

        return write(run)

    monkeypatch.setattr(v._db, "write", write_failing_once)
    ref = totp()
    assert v.resync(s, ref.at(clock.t + 60), ref.at(clock.t + 90), user="bob", password=PW).accepted
    assert failed_once
    assert fails() == 2  # reserved once (+1), given back once (-1)
    v.close()


def test_logins_teach_the_drift_slowly_and_only_so_far(tmp_path, clock):
    v = make(tmp_path / "v.db", clock, totp_window=3)
    s = enrol(v, "carol", "totp", SHA1_SEED)
    ref = totp()
    # each login brings the code at the window's back edge: 40 of them would walk the drift to -120
    for _ in range(40):
        clock.t += 300
        d = v.token(s).drift
        v.check_code("carol", ref.at(clock.t + (d - 3) * 30))
    d = v.token(s).drift
    assert -v.policy.totp_drift_max <= d < 0
    t = v.token(s)
    assert not v.check_code("carol", ref.at(t.last_step * 30)).accepted  # never the newest step again
    v.close()


# --- 2: a stranger who knows a user name ----------------------------------------------------------


def test_a_stranger_at_full_speed_does_not_keep_the_user_out(tmp_path, clock):
    v = make(tmp_path / "v.db", clock)
    enrol(v, "dora", "hotp", SHA1_SEED)
    counter = 1
    attacker = real_in = real_tries = 0
    # 100 wrong passwords a second for a minute; the real user logs in every 10 s
    for tick in range(1, 6001):
        clock.t += 0.01
        if tick % 1000 == 0:
            real_tries += 1
            if v.verify("dora", PW, hotp().at(counter)).accepted:
                real_in += 1
                counter += 1
        elif tick % 10 == 0:  # 10 per second through the library, the other 90 left to the back-off
            attacker += 1
            assert not v.verify("dora", f"guess {tick}", "123456").accepted
    assert (real_in, real_tries) == (6, 6), (real_in, real_tries, attacker)
    assert len(v.audit(user="dora", limit=None)) < 30  # 594 wrong passwords, counted in a few rows
    v.close()


def test_backoff_grows_per_failure_per_user_and_per_source(tmp_path, clock):
    v = make(tmp_path / "v.db", clock, user_rate_limit=3, backoff_max=60)
    enrol(v, "emil", "hotp", SHA1_SEED)
    v.add_user("fred", PW, twofa=False)
    # a password-only user cannot be told from a guesser: past the free tries, the back-off refuses
    reasons = []
    for _ in range(8):
        v.verify("fred", "wrong password")
        reasons.append(v.explain("fred").detail)
    assert reasons[:3] == ["wrong-password"] * 3 and reasons[4] == "throttled"
    delays = [rules.backoff(n, v.policy) for n in range(1, 12)]
    assert delays[:2] == [0, 0] and delays[2:6] == [1, 2, 4, 8] and delays[-1] == 60
    # a source in back-off is refused unchecked, for any user; another source is not
    for i in range(4):
        v.verify("emil", f"wrong {i}", "123456", source="203.0.113.9")
    assert v.verify("nobody", "x" * 9, "123456", source="203.0.113.9").reason == "throttled"
    assert v.verify("emil", PW, hotp().at(1), source="203.0.113.9").reason == "throttled"
    assert v.verify("emil", PW, hotp().at(1), source="198.51.100.4").accepted


def test_no_backoff_before_the_free_tries_even_with_clocks_a_moment_apart(tmp_path, clock):
    """Two nodes (or threads) whose clocks read 2 ms apart: the later clock's attempt reserves first;
    the earlier one is still checked (not throttled) while the free tries last."""
    v = make(tmp_path / "v.db", clock)
    enrol(v, "hugo", "hotp", SHA1_SEED)
    late = Clock(clock.t + 0.002)
    other = Verifier.open(tmp_path / "v.db", key=b"K" * 32, policy=v.policy, clock=late)
    assert other.check_code("hugo", "000000").reason == "wrong-code"
    assert v.check_code("hugo", "000001").reason == "wrong-code"
    other.close()
    v.close()


def test_a_stolen_password_still_meets_the_token_lockout(tmp_path, clock):
    v = make(tmp_path / "v.db", clock, max_fail=5)
    s = enrol(v, "gina", "hotp", SHA1_SEED)
    window = {hotp().at(c) for c in range(1, 12)}
    guesses = [c for c in (f"{i:06d}" for i in range(200)) if c not in window]
    for g in guesses[:40]:  # the right password, codes guessed at full speed, during the back-off too
        clock.t += 0.01
        assert not v.verify("gina", PW, g).accepted
    assert v.token(s).fail_count == 5 and v.token(s).locked
    v.close()


# --- 3: replays ---------------------------------------------------------------------------------------


def _login(db, code, start, hold, out, policy):
    v = Verifier.open(db, key=KEY, policy=policy)
    if hold is not None:
        v._before_write = hold.wait  # every login holds here once its password matched, before its code's transaction
    start.wait()
    r = v.verify("hank", PW, code)
    out.append((r.accepted, r.reason))
    v.close()


@pytest.mark.parametrize("held", [True, False], ids=["all-matched-then-race", "start-together"])
def test_sixteen_concurrent_logins_with_one_code_are_one_login_and_fifteen_replays(tmp_path, held):
    """A double-clicked button, a retrying client: 16 logins with one code at once. Held: each one
    waits once its password matched, before its code's write transaction, until all 16 have (max_fail
    raised to let all 16 reserve);
    not held: the default policy, started together."""
    db = tmp_path / "replay.db"
    policy = Policy(password_profile="fast", max_fail=16 if held else 10)
    v = Verifier.init(db, key=KEY, policy=policy)
    s = make_serial(77)
    v.import_records([TokenRecord(s, "hotp", "sha1", 6, SHA1_SEED)])
    v.add_user("hank", PW)
    assert v.link("hank", s, hotp().at(0)).accepted
    start, out = threading.Barrier(16), []
    hold = threading.Barrier(16, timeout=60) if held else None
    threads = [
        threading.Thread(target=_login, args=(str(db), hotp().at(1), start, hold, out, policy)) for _ in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(out)[-1] == (True, "ok") and len(out) == 16
    # a login that could not even reserve a check while 10 were in flight says "locked" (not counted)
    assert {reason for _, reason in sorted(out)[:-1]} <= ({"replay"} if held else {"replay", "locked"}), out
    t = v.token(s)
    assert (t.fail_count, t.locked, t.counter) == (0, False, 2)
    rows = v.audit(user="hank", action="validate")
    assert sorted(r.detail or "ok" for r in rows) == sorted(reason for _, reason in out)
    assert v.verify("hank", PW, hotp().at(2)).accepted
    v.close()


def test_a_totp_replay_is_a_replay_and_not_a_failure(tmp_path, clock):
    v = make(tmp_path / "v.db", clock, max_fail=2)
    s = enrol(v, "ivan", "totp", SHA1_SEED)
    clock.t += 60
    code = totp().at(clock.t)
    assert v.verify("ivan", PW, code).accepted
    for _ in range(5):
        r = v.verify("ivan", PW, code)
        assert (r.accepted, r.reason) == (False, "replay")
    assert v.token(s).fail_count == 0
    v.close()


# --- 4: a database held by another process ----------------------------------------------------------


def keyfob(*args, env=None, input=None, timeout=60):
    cmd = [os.fsencode(sys.executable), b"-c", b"from keyfob.cli import main; main()", *args]
    return subprocess.run(cmd, env=env, input=input, capture_output=True, timeout=timeout)


@pytest.fixture
def cli_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_")}
    env.update(
        KEYFOB_DB=str(tmp_path / "v.db"),
        KEYFOB_KEY_FILE=str(tmp_path / "v.key"),
        KEYFOB_ARGON2_PROFILE="fast",
        KEYFOB_DB_WAIT="1",
    )
    r = CliRunner(env=env)
    assert r.invoke(main, ["server", "init"]).exit_code == 0
    assert r.invoke(main, ["user", "add", "judy", "--password-stdin"], input=PW + "\n").exit_code == 0
    return env


def test_a_locked_database_gives_one_line_and_exit_3_after_a_bounded_wait(tmp_path, cli_env):
    holder = sqlite3.connect(tmp_path / "v.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's write lock, held
    try:
        r = keyfob(b"validate", b"judy", (PW + "123456").encode(), env=cli_env, timeout=30)
        err = r.stderr.decode().strip()
        assert r.returncode == 3 and "\n" not in err and "locked" in err, err  # unavailable
        with pytest.raises(DatabaseBusy):
            with Verifier.open(tmp_path / "v.db", key_file=tmp_path / "v.key", lock_wait=0.2) as v:
                v.verify("judy", PW, "123456")
    finally:
        holder.rollback()
        holder.close()


# --- 5: invalid UTF-8 on the command line -------------------------------------------------------------


def test_invalid_utf8_is_one_line_exit_2_audited_and_uses_no_slot(tmp_path, cli_env):
    for args, stdin in [  # the command line, and a password+code line on stdin
        ((b"validate", b"judy", b"\xffpassword123287082"), None),
        ((b"validate", b"judy", b"-"), b"\xfe" + PW.encode() + b"123456\n"),
    ]:
        r = keyfob(*args, env=cli_env, input=stdin)
        err = r.stderr.decode().strip()
        assert r.returncode == 2 and "\n" not in err and "UTF-8" in err, err
        assert b"password1232" not in r.stderr and PW.encode() not in r.stderr and b"Traceback" not in r.stderr
    # a user name's bytes, as Python decodes argv (surrogateescape), through click in-process
    name = os.fsdecode(b"j\xffdy")
    r = CliRunner(env=cli_env).invoke(main, ["validate", name, PW + "123456"])
    assert r.exit_code == 2 and "UTF-8" in r.stderr and r.stderr.count("\n") == 1
    with Verifier.open(tmp_path / "v.db", key_file=tmp_path / "v.key") as v:
        rows = v.audit(action="validate")
        assert [r.detail for r in rows] == ["invalid UTF-8"] * 3
        with v._engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM throttle").scalar() == 0


# --- 6: what someone without the password learns --------------------------------------------------------


def test_every_refusal_looks_the_same_to_the_relying_party(tmp_path, monkeypatch):
    for k, val in {"KEYFOB_DB": tmp_path / "v.db", "KEYFOB_KEY_FILE": tmp_path / "v.key"}.items():
        monkeypatch.setenv(k, str(val))
    monkeypatch.setenv("KEYFOB_ARGON2_PROFILE", "fast")
    r = CliRunner()

    def run(*args, input=None):
        return r.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)

    assert run("server", "init", "--max-fail", "2", "--user-rate-limit", "0").exit_code == 0
    for name, extra in (("kim", ()), ("lea", ()), ("max", ("--no-2fa",)), ("ned", ())):
        assert run("user", "add", name, "--password-stdin", *extra, input=PW + "\n").exit_code == 0
    s1, s2, s3 = make_serial(81), make_serial(82), make_serial(83)
    (tmp_path / "t.csv").write_text(
        "".join(f"{s},{SHA1_SEED.hex()},hotp,6,0\n" for s in (s1, s2)) + f"{s3},{SHA1_SEED.hex()},hotp,8,0\n"
    )
    assert run("token", "import", tmp_path / "t.csv").exit_code == 0
    h8 = pyotp.HOTP(base64.b32encode(SHA1_SEED).decode(), digits=8)
    assert run("token", "link", "kim", s1, hotp().at(0)).exit_code == 0
    assert run("token", "link", "lea", s2, hotp().at(0)).exit_code == 0
    assert run("token", "link", "ned", s3, h8.at(0)).exit_code == 0
    assert run("token", "disable", s2).exit_code == 0
    for _ in range(2):
        run("validate", "ned", PW, "00000000")  # locks ned's token
    causes = {
        "wrong-password": ("validate", "kim", "wrong password", hotp().at(1)),
        "wrong-code": ("validate", "kim", PW, "000000"),
        "unknown-user": ("validate", "nobody", PW + hotp().at(1)),
        "password-in-user-field": ("validate", PW, PW + hotp().at(1)),
        "disabled": ("validate", "lea", PW + hotp().at(1)),
        "locked": ("validate", "ned", PW + h8.at(1)),
        "no-2fa-given-a-code": ("validate", "max", PW, "123456"),
        "wrong-length": ("validate", "kim", PW, "1234567"),
        "letters": ("validate", "kim", PW, "12a456"),
        "code-only-unknown": ("validate", "nobody", "123456", "--code-only"),
    }
    outs = {}
    for cause, args in causes.items():
        res = run(*args)
        outs[cause] = (res.exit_code, res.stdout_bytes, res.stderr_bytes)
        assert PW.encode() not in res.stdout_bytes + res.stderr_bytes, cause
        jres = run(*args, "--json")
        assert (jres.exit_code, json.loads(jres.stdout)) == (1, {"accepted": False}), cause
    assert len(set(outs.values())) == 1, outs
    assert outs["wrong-code"][0] == 1
    # the admin asks: --explain shows the reason, and the audit log has it
    res = run("validate", "kim", "wrong password", hotp().at(1), "--explain", "--json")
    assert json.loads(res.stdout)["reason"] == "wrong-password"
    assert "--explain" in run("validate", "--help").stdout and "admin" in run("validate", "--help").stdout
    rows = json.loads(run("audit", "--action", "validate", "--json", "--limit", "100").stdout)
    assert {"unknown-user", "malformed", "unexpected-code", "no-token", "locked"} <= {e["detail"] for e in rows}


def test_an_unknown_user_costs_one_argon2_verify_like_a_known_one(tmp_path, clock, monkeypatch):
    v = make(tmp_path / "v.db", clock)
    enrol(v, "olga", "hotp", SHA1_SEED)
    calls = []
    real = argon2.PasswordHasher.verify
    monkeypatch.setattr(argon2.PasswordHasher, "verify", lambda self, h, p: calls.append(1) or real(self, h, p))
    for name in ("olga", "nobody"):
        calls.clear()
        assert not v.verify(name, PW + "wrong", "123456").accepted
        assert len(calls) == 1, name
    calls.clear()
    assert not v.verify("nobody", "x" * 12).accepted  # no code at all: still the one verify
    assert len(calls) == 1
    assert v.explain("nobody").detail == "unknown-user"
    v.close()


@pytest.mark.parametrize("source", [None, "203.0.113."], ids=["no-source", "one-source"])
def test_in_back_off_the_cost_of_an_attempt_does_not_tell_who_a_name_is(tmp_path, clock, monkeypatch, source):
    """The attacker floods a name from many addresses until it is in back-off, then times attempts
    of its own (one field, as a login form sends it), from one address or through a front that
    gives none. Each must cost the same Argon2 work whether the name is a user without 2FA
    (refused unchecked), a two-factor user (checked anyway) or no one (a dummy check), or the time
    says the name exists and has no second factor; and from one address the work must stop once
    that address is in back-off, whoever the name is (else one address makes the server hash at
    will)."""
    v = make(tmp_path / "v.db", clock, user_rate_limit=3)
    enrol(v, "olga", "hotp", SHA1_SEED)
    v.add_user("noah", PW, twofa=False)
    calls = []
    real = argon2.PasswordHasher.verify
    monkeypatch.setattr(argon2.PasswordHasher, "verify", lambda self, h, p: calls.append(1) or real(self, h, p))
    costs = {}
    for n, name in enumerate(("olga", "noah", "nobody")):
        for i in range(6):
            assert not v.verify(name, f"guess number {i}123456", source=f"198.51.{n}.{i}").accepted
        costs[name] = []
        for i in range(6):
            calls.clear()
            # from one address (a fresh one per name: each address's own back-off is the point)
            assert not v.verify(name, f"guess number {i}654321", source=source and f"{source}{n}").accepted
            costs[name].append(len(calls))
    assert v.explain("noah").detail == "throttled"  # refused unchecked, as it must be
    assert costs["olga"] == costs["noah"] == costs["nobody"], costs
    assert costs["nobody"][0] >= 1
    if source is not None:
        assert costs["nobody"][-1] == 0, costs  # the address is in back-off: no more work for it
    v.close()


# --- 7: unknown users, aggregated throttling, retention ---------------------------------------------


@pytest.mark.parametrize("source", ["192.0.2.1", None], ids=["with-source", "no-source"])
def test_three_thousand_throttled_attempts_add_few_audit_rows(tmp_path, clock, source):
    """From one source, 3,000 (refused unchecked); with no source, 1,000 (each costs a dummy Argon2
    verify, so the suite stays quick: the rows do not grow with the count either way)."""
    v = make(tmp_path / "v.db", clock)
    before = len(v.audit(limit=None))
    n = 3000 if source else 1000
    for i in range(n):
        clock.t += 0.01
        v.verify("nobody", f"password {i}", "123456", source=source)
    rows = v.audit(limit=None)[: -before or None]
    assert len(rows) <= 20, len(rows)
    assert {r.detail for r in rows} <= {"throttled", "unknown-user"} and sum(r.count for r in rows) == n
    assert v.explain("nobody").detail in ("throttled", "unknown-user")
    v.close()


def test_audit_retention_prunes_old_rows(tmp_path, clock):
    v = make(tmp_path / "v.db", clock, audit_days=30)
    v.add_user("pete", PW)
    clock.t += 31 * 86400
    v.add_user("quin", PW)
    assert v.prune_audit() >= 1
    assert [r.action for r in v.audit(limit=None)] == ["audit-prune", "user-add"]
    clock.t += 31 * 86400
    v.close()
    env = {"KEYFOB_KEY": base64.urlsafe_b64encode(b"K" * 32).decode()}
    res = CliRunner(env=env).invoke(main, ["audit", "prune", "--db", str(tmp_path / "v.db"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["pruned"] >= 2  # quin's row and the first prune's, by the real clock


# --- 8: the smaller holes -------------------------------------------------------------------------------


def test_smaller_holes(tmp_path, clock):
    v = make(tmp_path / "v.db", clock)
    with pytest.raises(BadInput):
        v.audit(limit=9223372036854775808)
    with pytest.raises(BadInput):
        rules.parse_setting("max_fail", "५")
    with pytest.raises(BadInput):
        rules.parse_setting("lock_seconds", "６０")
    with pytest.raises(BadInput, match="ASCII"):
        v.import_records([TokenRecord("КF000000013", "hotp", "sha1", 6, SHA1_SEED)])
    for size in (15, 65, 62500):  # the 62,500-byte seed of the issue, in a seed file
        (tmp_path / "big.csv").write_text(f"{serial()},{os.urandom(size).hex()},hotp,6,0\n")
        with pytest.raises(SeedFileError, match="at least 16 bytes .* at most 64"):
            v.import_seed_file(tmp_path / "big.csv")
    v.import_records([TokenRecord(serial(), "hotp", "sha1", 6, os.urandom(64))])
    s = enrol(v, "rita", "totp", SHA1_SEED)
    assert v.resync(s, totp().at(clock.t + 120), totp().at(clock.t + 150), user="rita", password=PW).accepted
    assert v.token(s).drift == 5
    v.reset_drift(s)
    assert v.token(s).drift == 0
    assert v.resync(s, totp().at(clock.t + 240), totp().at(clock.t + 270)).accepted
    v.unlink(s)
    assert v.token(s).drift == 0
    assert [r.action for r in v.audit(serial=s, limit=2)] == ["token-unlink", "token-resync"]
    v.close()


def test_hotp_window_does_what_its_help_says(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYFOB_ARGON2_PROFILE", "fast")
    db = ["--db", str(tmp_path / "v.db"), "--key-file", str(tmp_path / "v.key")]
    r = CliRunner()
    help_text = " ".join(r.invoke(main, ["server", "init", "--help"]).stdout.split())
    assert "the expected counter and the N-1 after it" in help_text
    assert r.invoke(main, ["server", "init", "--hotp-window", "3", *db]).exit_code == 0
    assert r.invoke(main, ["user", "add", "sam", "--password-stdin", *db], input=PW + "\n").exit_code == 0
    (tmp_path / "t.csv").write_text(f"{make_serial(91)},{SHA1_SEED.hex()},hotp,6,0\n")
    assert r.invoke(main, ["token", "import", str(tmp_path / "t.csv"), *db]).exit_code == 0
    assert r.invoke(main, ["token", "link", "sam", make_serial(91), hotp().at(0), *db]).exit_code == 0
    assert r.invoke(main, ["validate", "sam", PW, hotp().at(4), *db]).exit_code == 1  # 1 + 3: beyond
    assert r.invoke(main, ["validate", "sam", PW, hotp().at(3), *db]).exit_code == 0  # 1 + 2: the last one
    assert r.invoke(main, ["audit", "--limit", "9223372036854775808", *db]).exit_code == 2
    res = r.invoke(main, ["token", "reset-drift", make_serial(91), *db])
    assert res.exit_code == 0, res.output


def test_cli_serial_lookalike_is_refused_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYFOB_ARGON2_PROFILE", "fast")
    db = ["--db", str(tmp_path / "v.db"), "--key-file", str(tmp_path / "v.key")]
    r = CliRunner()
    assert r.invoke(main, ["server", "init", *db]).exit_code == 0
    (tmp_path / "t.csv").write_text(f"КF000000013,{SHA1_SEED.hex()},hotp,6,0\n", encoding="utf-8")
    res = r.invoke(main, ["token", "import", str(tmp_path / "t.csv"), *db])
    assert res.exit_code == 2 and "ASCII" in res.stderr, res.output
    res = r.invoke(main, ["server", "config", "--set", "max_fail=५", *db])
    assert res.exit_code == 2, res.output
