"""The verifier's limits as the library applies them: attempt reservations (the lockout and the
per-user rate limit) follow the pure rules and give themselves back on success; the policy lives in
the database; counters stay below 2**63; the database file is private; a database URL's password is
never shown. On SQLite and PostgreSQL (the ``db`` fixture), but for the file's own checks.
Sequential here (an injected clock, no sleeping); the parallel cases are in
test_verifier_race.py."""

import base64
import os
import random
import stat

import pyotp
import pytest
from keyfob.records import RecordError, TokenRecord
from keyfob.serials import make_serial
from keyfob.verifier import BadInput, DatabaseError, Policy, Verifier, rules
from keyfob.verifier import db as vdb
from sqlalchemy import text

SEED = b"12345678901234567890"
SEED_B = b"another twenty bytes"
PW = "limits password 42"
KEY = b"L" * 32


class Clock:
    def __init__(self, t=1_700_000_000.0):
        self.t = float(t)

    def __call__(self):
        return self.t


def hotp(seed=SEED):
    return pyotp.HOTP(base64.b32encode(seed).decode())


def make(db, clock, **policy):
    return Verifier.init(db, key=KEY, policy=Policy(password_profile="fast", **policy), clock=clock)


def enrol(v, user, seed=SEED, n=1, counter=0):
    s = make_serial(n)
    v.import_records([TokenRecord(s, "hotp", "sha1", 6, seed, counter=counter)])
    if user not in [u.name for u in v.list_users()]:
        v.add_user(user, PW)
    assert v.link(user, s, hotp(seed).at(counter)).accepted
    return s


def throttle_state(v, name):
    """The user name's throttle row: (fails, last_fail, next_ok), or None."""
    key = "u:" + v._box.name_tag(name)
    with v._engine.connect() as conn:
        q = text("SELECT fails, last_fail, next_ok FROM throttle WHERE key = :k")
        row = conn.execute(q, {"k": key}).first()
    return None if row is None else tuple(row)


def throttle_fails(v, name):
    return throttle_state(v, name)[0]


def token_lock(v, serial):
    with v._engine.connect() as conn:
        q = text("SELECT fail_count, locked_until FROM tokens WHERE serial = :s")
        return tuple(conn.execute(q, {"s": serial}).one())


# --- reservations ----------------------------------------------------------------------------------


def test_a_valid_code_under_the_limit_works_and_gives_its_reservations_back(db):
    clock = Clock()
    v = make(db, clock, max_fail=3, user_rate_limit=20)
    s = enrol(v, "ada")
    ref = hotp()
    for _ in range(2):
        assert v.check_code("ada", "000000").reason == "wrong-code"
    assert token_lock(v, s) == (2, None) and throttle_fails(v, "ada") == 2
    # the right code takes the third and last reservation (which locks for a moment) and is accepted
    r = v.check_code("ada", ref.at(1))
    assert (r.accepted, r.reason) == (True, "ok")
    assert token_lock(v, s) == (0, None)  # the success reset the token's count
    assert throttle_fails(v, "ada") == 2  # and did not count on the user's throttle
    assert not v.token(s).locked
    # the same through verify(): password + code
    assert v.verify("ada", PW, ref.at(2)).accepted
    assert throttle_fails(v, "ada") == 2
    assert [a.result for a in v.audit(user="ada", action="validate", limit=None)] == ["ok", "ok", "fail", "fail"]
    v.close()


def test_success_on_one_token_does_not_count_on_the_users_other_tokens(db):
    clock = Clock()
    v = make(db, clock, max_fail=3)
    a = enrol(v, "bea", SEED, n=1)
    b = enrol(v, "bea", SEED_B, n=2)
    ref_b = hotp(SEED_B)
    for i in range(1, 6):  # more successes than max_fail: a would lock if each counted on it
        assert v.check_code("bea", ref_b.at(i)).serial == b
    assert token_lock(v, a) == (0, None) and token_lock(v, b) == (0, None)
    assert v.check_code("bea", "000000").reason == "wrong-code"  # a wrong code counts on both
    assert token_lock(v, a)[0] == 1 and token_lock(v, b)[0] == 1
    assert v.check_code("bea", hotp(SEED).at(1)).serial == a
    # a was reset by its success; b keeps the earlier wrong code but not this attempt's reservation
    assert token_lock(v, a)[0] == 0 and token_lock(v, b)[0] == 1
    v.close()


def test_reservations_follow_the_pure_rules(db):
    """A long random run of wrong codes at random times: each attempt's outcome, and the stored fail
    count, lock and throttle row after it, are what rules.after_failure / throttle_reserve /
    is_locked say."""
    clock = Clock()
    policy = dict(max_fail=4, lock_seconds=300, user_rate_limit=6, user_rate_window=60, backoff_max=30)
    v = make(db, clock, **policy)
    p = v.policy
    s = enrol(v, "cy")
    fc, lu = 0, None
    key = None
    rnd = random.Random(20240601)
    seen = set()
    for _ in range(160):
        clock.t += rnd.choice([0, 0, 0, 0.5, 1, 1, 2, 3, 10, 59.9, 60, 61, 299.9, 300, 301, -5, -100])
        now = clock.t
        after = rules.throttle_reserve(key or (0, now, 0), now, p)
        if after is None:
            want = "throttled"
        else:
            key = after
            if rules.is_locked(fc, lu, now, p):
                want = "locked"
            else:
                want = "wrong-code"
                fc, lu = rules.after_failure(fc, lu, now, p)
        got = v.check_code("cy", "000000").reason
        seen.add(got)
        assert got == want, (now, got, want)
        assert token_lock(v, s) == (fc, lu)
        assert throttle_state(v, "cy") == key
    assert seen == {"throttled", "locked", "wrong-code"}
    v.close()


def test_a_wrong_password_counts_on_the_user_never_on_the_token(db):
    clock = Clock()
    v = make(db, clock, user_rate_limit=3, max_fail=2)
    s = enrol(v, "dan")
    for _ in range(3):
        assert v.verify("dan", "not the password", "123456").reason == "wrong-password"
    assert token_lock(v, s) == (0, None)
    assert v.verify("dan", PW, "000000", source="192.0.2.7").reason == "wrong-code"  # in back-off, still checked
    assert token_lock(v, s) == (1, None)  # a right password's wrong code counts on the token
    assert v.verify("dan", PW, hotp().at(1)).accepted  # two factors are checked in back-off
    v.close()


def test_self_service_resync_reserves_like_a_login(db):
    clock = Clock()
    v = make(db, clock, max_fail=2, user_rate_limit=10)
    s = enrol(v, "eve")
    ref = hotp()
    assert v.resync(s, ref.at(30), ref.at(32), user="eve", password=PW).reason == "wrong-code"
    assert v.resync(s, ref.at(30), ref.at(32), user="eve", password=PW).reason == "wrong-code"
    assert v.token(s).locked
    assert v.resync(s, ref.at(30), ref.at(31), user="eve", password=PW).reason == "locked"
    v.unlock(s)
    r = v.resync(s, ref.at(30), ref.at(31), user="eve", password=PW)
    assert r.accepted and v.token(s).counter == 32 and token_lock(v, s) == (0, None)
    assert throttle_fails(v, "eve") == 3  # two wrong codes and the locked attempt; not the success
    v.close()


# --- the policy is kept in the database ------------------------------------------------------------


def test_policy_is_stored_read_by_every_node_and_changed_for_all(db):
    clock = Clock()
    v = make(db, clock, max_fail=3, hotp_window=5, lock_seconds=None, user_rate_limit=0)
    v.close()
    other = Verifier.open(db, key=KEY, password_profile="fast", clock=clock)
    assert other.policy.shared() == Policy(max_fail=3, hotp_window=5, lock_seconds=None, user_rate_limit=0).shared()
    with pytest.raises(BadInput, match="max_fail"):  # a node may not bring limits of its own
        Verifier.open(db, key=KEY, policy=Policy(password_profile="fast"))
    s = enrol(other, "fay")
    ref = hotp()
    assert other.check_code("fay", ref.at(6)).reason == "wrong-code"  # beyond a look-ahead of 5
    assert other.check_code("fay", ref.at(5)).accepted  # within it

    new = other.set_policy({"hotp_window": 20, "max_fail": 2}, actor="ops")
    assert (new.hotp_window, new.max_fail) == (20, 2)
    details = sorted(a.detail for a in other.audit(action="server-config"))
    assert details == ["hotp_window 5 -> 20", "max_fail 3 -> 2"]
    assert {a.actor for a in other.audit(action="server-config")} == {"ops"}
    with pytest.raises(BadInput):
        other.set_policy({"max_fail": 0})
    with pytest.raises(BadInput, match="unknown setting"):
        other.set_policy({"password_profile": "fast"})
    other.close()

    third = Verifier.open(db, key=KEY, password_profile="fast", clock=clock)
    assert (third.policy.hotp_window, third.policy.max_fail) == (20, 2)
    assert third.check_code("fay", ref.at(6 + 19)).accepted  # the wider window applies
    for _ in range(2):
        third.check_code("fay", "000000")
    assert third.token(s).locked and third.token(s).locked_until is None  # lock_seconds never
    clock.t += 10**6
    assert third.check_code("fay", ref.at(26)).reason == "locked"  # only an admin unlocks
    third.close()


def test_a_database_without_a_stored_policy_opens_with_the_defaults(db):
    make(db, Clock(), max_fail=3).close()
    engine = vdb.make_engine(db, must_exist=True)
    vdb.write(engine, lambda conn: conn.execute(text("DELETE FROM settings WHERE name = 'policy'")))
    engine.dispose()
    v = Verifier.open(db, key=KEY)
    assert v.policy.shared() == Policy().shared()
    v.set_policy({"max_fail": 4})  # and the first change stores one
    v.close()
    assert Verifier.open(db, key=KEY).policy.max_fail == 4


def test_setting_values_parse_or_are_refused():
    assert rules.parse_setting("lock_seconds", "never") is None
    assert rules.parse_setting("lock_seconds", "90") == 90
    assert rules.parse_setting("user_rate_window", "2.5") == 2.5
    assert rules.parse_setting("max_fail", "7") == 7
    for name, value in [("max_fail", "7.5"), ("max_fail", "x"), ("lock_seconds", "nan"), ("nope", "1")]:
        with pytest.raises(BadInput):
            rules.parse_setting(name, value)


# --- counters stay below 2**63 (the column is a signed 64-bit integer) ----------------------------


def test_counters_near_the_top_are_refused_or_stop_cleanly(db):
    with pytest.raises(RecordError, match="2\\*\\*63"):
        TokenRecord(make_serial(9), "hotp", "sha1", 6, SEED, counter=2**63)
    top = 2**63 - 1
    clock = Clock()
    v = make(db, clock, user_rate_limit=0)
    ref = hotp()
    s = enrol(v, "gus", counter=top - 3)  # linked: the next counter is top - 2
    assert v.check_code("gus", ref.at(top - 2)).accepted  # stored counter becomes top - 1
    assert v.check_code("gus", ref.at(top - 1)).accepted  # ... and top: the last one storable
    assert v.token(s).counter == top
    assert v.check_code("gus", ref.at(top)).reason == "wrong-code"  # no code after the top
    r = v.resync(s, ref.at(top), ref.at(top + 1))
    assert (r.accepted, r.reason) == (False, "wrong-code")
    assert v.token(s).counter == top
    v.close()


# --- the database file is private -----------------------------------------------------------------


def test_database_file_and_its_wal_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        v = Verifier.init(tmp_path / "new" / "dir" / "v.db", key=KEY, policy=Policy(password_profile="fast"))
        v.add_user("hal", PW)
        db = tmp_path / "new" / "dir" / "v.db"
        wal = tmp_path / "new" / "dir" / "v.db-wal"
        assert wal.exists()  # WAL mode, connection open
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700  # the directory we made
        v.close()
    finally:
        os.umask(old)
    db.chmod(0o644)
    with pytest.raises(DatabaseError, match="accessible by others .*0644.*chmod 600"):
        Verifier.open(db, key=KEY)
    db.chmod(0o600)
    Verifier.open(db, key=KEY).close()


def test_not_a_database_is_one_clear_error(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("not a database at all\n")
    other.chmod(0o600)
    fake = tmp_path / "fake.db"
    fake.write_bytes(b"SQLite format 3\x00" + b"\x07" * 2000)  # the magic, then garbage
    fake.chmod(0o600)
    for path, needle in [
        (other, "not a keyfob database"),
        (fake, "not a keyfob database"),
        (tmp_path, "is a directory"),
    ]:
        for call in (
            lambda path=path: Verifier.open(path, key=KEY),
            lambda path=path: Verifier.init(path, key=KEY),
        ):
            with pytest.raises(DatabaseError, match=needle) as caught:
                call()
            assert "\n" not in str(caught.value)
    assert other.read_text() == "not a database at all\n"


# --- a database URL's password is never shown ----------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://alice:s3cretPW@127.0.0.1:1/keyfob",
        "postgresql+psycopg://alice:s3cretPW@127.0.0.1:1/keyfob",
        "nosuchdialect://alice:s3cretPW@db.example/keyfob",
        "postgresql://alice:s3cretPW@127.0.0.1:notaport/keyfob",
    ],
)
def test_a_database_url_password_is_never_in_a_message(url):
    for call in (lambda: Verifier.open(url, key=KEY), lambda: Verifier.init(url, key=KEY)):
        with pytest.raises(DatabaseError) as caught:
            call()
        msg = str(caught.value)
        assert "s3cretPW" not in msg and "alice" in msg, msg
    assert "s3cretPW" not in vdb.display(url)
