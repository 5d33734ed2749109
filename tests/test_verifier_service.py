"""The Verifier through its library API, on SQLite and on PostgreSQL (the ``db`` fixture), with an
injected clock (no sleeping).

Acceptance points 1 (RFC values through import -> link -> validate), 2 (windows, replay, resync,
drift), 4 (lockout, unlock, backup codes) and 5 (password+code in one field); also a hypothesis
check of the whole service against pyotp (point 7), key handling and schema migrations.
"""

import base64
import itertools
import os
import stat

import databases
import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.verifier import (
    AlreadyExists,
    BadInput,
    DatabaseError,
    KeyFileError,
    Policy,
    TokenStateError,
    Verifier,
)
from keyfob.verifier import db as vdb
from sqlalchemy import text

SHA1_SEED = b"12345678901234567890"
SHA256_SEED = b"12345678901234567890123456789012"
RFC4226_6 = [
    "755224",
    "287082",
    "359152",
    "969429",
    "338314",
    "254676",
    "287922",
    "162583",
    "399871",
    "520489",
]
# RFC 4226 appendix D, "Truncated" decimal values; 8 digits are these mod 10^8
RFC4226_TRUNC = [
    1284755224,
    1094287082,
    137359152,
    1726969429,
    1640338314,
    868254676,
    1918287922,
    82162583,
    673399871,
    645520489,
]
# RFC 6238 appendix B (8 digits, 30 s)
RFC6238_TIMES = [59, 1111111109, 1111111111, 1234567890, 2000000000, 20000000000]
RFC6238 = {
    "sha1": ["94287082", "07081804", "14050471", "89005924", "69279037", "65353130"],
    "sha256": ["46119246", "68084774", "67062674", "91819424", "90698825", "77737706"],
}
PW = "correct horse battery"


class Clock:
    def __init__(self, t=1_700_000_000.0):
        self.t = float(t)

    def __call__(self):
        return self.t


_serials = itertools.count(1)


def serial():
    return make_serial(next(_serials))


@pytest.fixture
def clock():
    return Clock()


def make(db, clock, **policy):
    policy.setdefault("password_profile", "fast")
    return Verifier.init(db, key=b"K" * 32, policy=Policy(**policy), clock=clock)


@pytest.fixture
def v(db, clock):
    ver = make(db, clock)
    yield ver
    ver.close()


def enrol(v, user, mode, seed, digits=6, algorithm="sha1", period=30, counter=0, first_code=None, pw=PW):
    """import -> (user) -> link with the token's current code. Returns the serial."""
    s = serial()
    v.import_records([TokenRecord(s, mode, algorithm, digits, seed, counter=counter, period=period)])
    if user not in [u.name for u in v.list_users()]:
        v.add_user(user, pw)
    if first_code is None:
        ref = pyotp.HOTP(
            base64.b32encode(seed).decode(), digits=digits, digest=__import__("hashlib").__dict__[algorithm]
        )
        if mode == "hotp":
            first_code = ref.at(counter)
        else:
            first_code = ref.at(int(v._clock()) // period)
    assert v.link(user, s, first_code).accepted
    return s


def audit_count(v):
    return len(v.audit(limit=None))


# --- 1: RFC values through the verifier -----------------------------------------------------------


# RFC arithmetic through the verifier: on SQLite only (the hypothesis tests below and the rest of
# the suite hold the verifier's storage of counters and steps on PostgreSQL too)
@databases.sqlite_only
@pytest.mark.parametrize("digits", [6, 8])
def test_rfc4226_hotp_through_verifier(v, digits):
    codes = [str(x % 10**digits).zfill(digits) for x in RFC4226_TRUNC]
    if digits == 6:
        assert codes == RFC4226_6
    s = enrol(v, "alice", "hotp", SHA1_SEED, digits=digits, first_code=codes[0])
    for c in codes[1:]:
        r = v.verify("alice", PW, c)
        assert r.accepted and r.serial == s


@databases.sqlite_only
@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
@pytest.mark.parametrize("digits", [6, 8])
@pytest.mark.parametrize("period", [30, 60])
def test_rfc6238_totp_through_verifier(v, clock, algorithm, digits, period):
    seed = SHA1_SEED if algorithm == "sha1" else SHA256_SEED
    # the RFC table is for 30 s steps; at twice the time a 60 s step has the same number
    times = [t * period // 30 for t in RFC6238_TIMES]
    codes = [c[-digits:] for c in RFC6238[algorithm]]  # 6 digits: the same value mod 10^6
    clock.t = times[0]
    s = enrol(v, "alice", "totp", seed, digits, algorithm, period, first_code=codes[0])
    for t, c in zip(times[1:], codes[1:], strict=True):
        clock.t = t
        r = v.verify("alice", PW + c)
        assert r.accepted and r.serial == s, (t, r)


@databases.sqlite_only
def test_rfc_values_through_a_seed_file(v, clock, tmp_path):
    """Point 1 from the seed file on: a PSKC file written by python-pskc itself (not keyfob's
    writer) with the RFC 4226 and RFC 6238 seeds, imported, linked and validated."""
    import pskc

    h, t = serial(), serial()
    p = pskc.PSKC()
    common = {"manufacturer": "keyfob", "response_encoding": "DECIMAL"}
    p.add_key(
        serial=h,
        algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp",
        algorithm_suite="HMAC-SHA1",
        response_length=6,
        counter=0,
        secret=SHA1_SEED,
        **common,
    )
    p.add_key(
        serial=t,
        algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp",
        algorithm_suite="HMAC-SHA256",
        response_length=8,
        time_interval=30,
        secret=SHA256_SEED,
        **common,
    )
    psk = bytes(range(16))
    p.encryption.setup_preshared_key(key=psk, algorithm="aes128-cbc", key_name="transport")
    p.write(str(tmp_path / "rfc.pskc"))
    assert sorted(v.import_seed_file(tmp_path / "rfc.pskc", key=psk)) == sorted([h, t])
    v.add_user("rfc", PW)
    assert v.link("rfc", h, RFC4226_6[0]).accepted
    for c in RFC4226_6[1:4]:
        assert v.verify("rfc", PW + c).serial == h
    clock.t = RFC6238_TIMES[1]
    assert v.link("rfc", t, RFC6238["sha256"][1]).accepted
    for when, c in zip(RFC6238_TIMES[2:], RFC6238["sha256"][2:], strict=True):
        clock.t = when
        assert v.verify("rfc", PW + c).serial == t


# --- 2: windows, replay, resync, drift ------------------------------------------------------------


def test_hotp_window_edge_replay_and_going_back(v):
    s = enrol(v, "bob", "hotp", SHA1_SEED)  # counter now 1
    ref = pyotp.HOTP(base64.b32encode(SHA1_SEED).decode())
    assert not v.check_code("bob", ref.at(11)).accepted  # 1 + 10: just beyond the look-ahead
    assert v.check_code("bob", ref.at(10)).accepted  # 1 + 9: the last inside
    assert v.token(s).counter == 11
    assert v.check_code("bob", ref.at(20)).accepted  # 11 + 9
    assert not v.check_code("bob", ref.at(20)).accepted  # replay
    assert not v.check_code("bob", ref.at(15)).accepted  # from before the last accepted one
    assert v.token(s).counter == 21


def test_totp_window_edges(v, clock):
    step = 60_000_000
    clock.t = step * 30  # the first instant of a step
    ref = pyotp.TOTP(base64.b32encode(SHA1_SEED).decode())
    s = serial()
    v.import_records([TokenRecord(s, "totp", "sha1", 6, SHA1_SEED)])
    v.add_user("carol", PW)
    assert not v.link("carol", s, ref.at((step - 2) * 30)).accepted  # 2 steps back: beyond
    assert v.link("carol", s, ref.at((step - 1) * 30)).accepted  # 1 step back: the edge
    assert v.token(s).drift == -1  # learned from the success
    v.unlink(s)  # back to the inventory, keeping the last step (no replay), forgetting the drift
    assert v.token(s).drift == 0
    now = step + 10
    clock.t = now * 30 + 29.999  # the last instant of a later step; the window is now +- 1
    assert not v.link("carol", s, ref.at((now + 2) * 30)).accepted  # beyond the window
    assert v.link("carol", s, ref.at(now * 30)).accepted
    assert v.token(s).drift == 0
    assert not v.check_code("carol", ref.at(now * 30)).accepted  # replay of the linking code
    assert not v.check_code("carol", ref.at((now - 1) * 30)).accepted  # before the last accepted step
    clock.t += 0.001  # the first instant of step now+1; window now .. now+2
    c = now + 1
    assert not v.check_code("carol", ref.at((c + 2) * 30)).accepted  # beyond the +1 edge
    assert v.check_code("carol", ref.at((c + 1) * 30)).accepted  # the +1 edge
    t = v.token(s)
    assert (t.last_step, t.drift) == (c + 1, 1)
    assert not v.check_code("carol", ref.at(c * 30)).accepted  # in the window but before the last
    assert not v.check_code("carol", ref.at((c + 1) * 30)).accepted  # replay


def test_hotp_resync_500_ahead(v):
    s = enrol(v, "dave", "hotp", SHA1_SEED)
    ref = pyotp.HOTP(base64.b32encode(SHA1_SEED).decode())
    assert not v.check_code("dave", ref.at(501)).accepted  # far ahead: not in the look-ahead
    assert not v.resync(s, ref.at(501), ref.at(503), wide=True).accepted  # not consecutive
    assert not v.resync(s, ref.at(501), ref.at(502)).accepted  # beyond the narrow search
    assert v.token(s).counter == 1
    v.check_code("dave", "000000")  # one more failure to see the count cleared
    assert v.token(s).fail_count >= 1
    assert v.resync(s, ref.at(501), ref.at(502), wide=True).accepted
    t = v.token(s)
    assert (t.counter, t.fail_count) == (503, 0)
    assert v.check_code("dave", ref.at(503)).accepted
    assert not v.check_code("dave", ref.at(502)).accepted


def test_totp_resync_self_service(v, clock):
    ref = pyotp.TOTP(base64.b32encode(SHA1_SEED).decode())
    s = enrol(v, "erin", "totp", SHA1_SEED)
    ahead = int(clock.t) + 8 * 30  # the token's clock is 4 minutes fast: self-service finds it
    assert not v.check_code("erin", ref.at(ahead)).accepted
    assert not v.resync(s, ref.at(ahead - 30), ref.at(ahead), user="erin", password="wrong pw!").accepted
    # two codes of the right time, but not consecutive (a step skipped, or in the wrong order)
    assert not v.resync(s, ref.at(ahead - 60), ref.at(ahead), user="erin", password=PW).accepted
    assert not v.resync(s, ref.at(ahead), ref.at(ahead - 30)).accepted
    assert v.token(s).drift == 0
    assert v.resync(s, ref.at(ahead - 30), ref.at(ahead), user="erin", password=PW).accepted
    assert v.token(s).drift == 8
    clock.t += 60
    assert v.check_code("erin", ref.at(ahead + 60)).accepted
    far = int(clock.t) + 5 * 3600  # 5 h fast: only the admin's wide search reaches it
    assert not v.resync(s, ref.at(far - 30), ref.at(far), user="erin", password=PW).accepted
    assert v.resync(s, ref.at(far - 30), ref.at(far), wide=True).accepted
    assert v.token(s).drift == 5 * 120
    v.add_user("frank", PW)
    with pytest.raises(TokenStateError):
        v.resync(s, ref.at(ahead + 90), ref.at(ahead + 120), user="frank", password=PW)


def test_totp_drift_followed_after_success(v, clock):
    ref = pyotp.TOTP(base64.b32encode(SHA1_SEED).decode())
    s = enrol(v, "gina", "totp", SHA1_SEED)
    s2 = serial()  # a second token with the same clock, for contrast: never had a success
    v.import_records([TokenRecord(s2, "totp", "sha1", 6, SHA1_SEED)])
    # the token's clock slips one more step per "day"; each login moves the window with it
    for drift in (1, 2, 3):
        clock.t += 86400
        r = v.check_code("gina", ref.at(clock.t + drift * 30))
        assert r.accepted, drift
        assert v.token(s).drift == drift
    clock.t += 86400
    assert v.check_code("gina", ref.at(clock.t + 3 * 30)).accepted  # 3 steps off, followed
    assert not v.link("gina", s2, ref.at(clock.t + 3 * 30 + 30)).accepted  # no learned drift: refused


# --- 4: lockout, unlock, backup codes -------------------------------------------------------------


def test_lockout_unlock_by_admin(db, clock):
    v = make(db, clock, user_rate_limit=0)
    s = enrol(v, "hank", "hotp", SHA1_SEED)
    ref = pyotp.HOTP(base64.b32encode(SHA1_SEED).decode())
    for _ in range(9):
        assert v.check_code("hank", "000000").reason == "wrong-code"
    assert not v.token(s).locked
    assert v.check_code("hank", "000000").reason == "wrong-code"  # the 10th
    assert v.token(s).locked
    r = v.check_code("hank", ref.at(1))
    assert (r.accepted, r.reason) == (False, "locked")
    assert v.token(s).counter == 1  # a locked token's codes do not move the counter
    v.unlock(s)
    assert v.check_code("hank", ref.at(1)).accepted
    v.close()


def test_lockout_ends_after_timeout_and_success_resets(db, clock):
    v = make(db, clock, user_rate_limit=0, lock_seconds=600)
    s = enrol(v, "ivan", "hotp", SHA1_SEED)
    ref = pyotp.HOTP(base64.b32encode(SHA1_SEED).decode())
    for _ in range(9):
        v.check_code("ivan", "000000")
    assert v.check_code("ivan", ref.at(1)).accepted  # success resets the count
    assert v.token(s).fail_count == 0
    for _ in range(9):
        v.check_code("ivan", "000000")
    assert not v.token(s).locked  # 9, not 18
    v.check_code("ivan", "000000")
    assert v.token(s).locked
    clock.t += 599
    assert v.check_code("ivan", ref.at(2)).reason == "locked"
    clock.t += 1
    assert v.check_code("ivan", ref.at(2)).accepted
    v.close()


def test_user_rate_limit_throttles_without_locking(db, clock):
    v = make(db, clock, user_rate_limit=3, user_rate_window=60)
    s = enrol(v, "judy", "hotp", SHA1_SEED)
    v.add_user("karl", PW, twofa=False)
    ref = pyotp.HOTP(base64.b32encode(SHA1_SEED).decode())
    for _ in range(3):
        assert v.verify("judy", "wrong password", "123456").reason == "wrong-password"
        assert v.verify("karl", "wrong password").reason == "wrong-password"
    assert v.token(s).fail_count == 0  # a wrong password never counts against the token
    # in back-off: the password alone is refused unchecked, password + code is still checked
    assert v.verify("karl", PW).reason == "throttled"
    assert v.verify("judy", PW, ref.at(1)).accepted
    clock.t += 1  # the first back-off (1 s) is over
    assert v.verify("karl", PW).accepted
    assert [a.detail for a in v.audit(user="karl", action="validate")][:2] == ["password only (2fa off)", "throttled"]
    v.close()


def test_backup_codes_single_use_and_lost_token(v):
    ref = pyotp.HOTP(base64.b32encode(SHA1_SEED).decode())
    s = enrol(v, "kate", "hotp", SHA1_SEED)
    codes = v.mark_lost(s)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert v.token(s).state == "lost"
    assert not v.check_code("kate", ref.at(1)).accepted  # lost: refused at once
    assert v.verify("kate", PW + codes[0]).reason == "backup-code"
    assert not v.verify("kate", PW + codes[0]).accepted  # once only
    assert v.verify("kate", PW, codes[1].upper().replace("-", "")).accepted
    assert not v.verify("kate", "wrong password", codes[2]).accepted
    # a new token is linked; new backup codes void the old unused ones
    s2 = enrol(v, "kate", "hotp", SHA256_SEED, algorithm="sha256")
    assert (
        v.verify(
            "kate",
            PW + pyotp.HOTP(base64.b32encode(SHA256_SEED).decode(), digest=__import__("hashlib").sha256).at(1),
        ).serial
        == s2
    )
    fresh = v.new_backup_codes("kate", count=2)
    assert not v.check_code("kate", codes[3]).accepted
    assert v.check_code("kate", fresh[0]).accepted
    assert {u.name: u.backup_codes for u in v.list_users()}["kate"] == 1


def test_lost_revoke_unlink_states(v):
    ref = pyotp.HOTP(base64.b32encode(SHA1_SEED).decode())
    s = enrol(v, "leo", "hotp", SHA1_SEED)
    v.unlink(s)
    assert v.token(s).state == "unassigned" and v.token(s).user is None
    assert v.check_code("leo", ref.at(1)).reason == "no-token"
    assert not v.link("leo", s, ref.at(0)).accepted  # the counter was kept: no replay after relinking
    assert v.link("leo", s, ref.at(1)).accepted
    v.disable(s)
    assert not v.check_code("leo", ref.at(2)).accepted
    v.enable(s)
    assert v.check_code("leo", ref.at(2)).accepted
    v.revoke(s)
    assert not v.check_code("leo", ref.at(3)).accepted
    with pytest.raises(TokenStateError):
        v.link("leo", s, ref.at(3))
    with pytest.raises(TokenStateError):
        v.mark_lost(s)
    actions = [a.action for a in v.audit(serial=s, limit=None)]
    for act in (
        "token-import",
        "token-link",
        "token-unlink",
        "token-disable",
        "token-enable",
        "token-revoke",
    ):
        assert act in actions


# --- 5: password and code in one field ------------------------------------------------------------


@pytest.mark.parametrize("pw", ["hunter2024", "pass12345678", "99999999", "ab" + "0" * 14])
def test_one_field_with_passwords_ending_in_digits(v, pw):
    s6 = enrol(v, "mia", "hotp", SHA1_SEED, digits=6, pw=pw)
    s8 = enrol(v, "mia", "hotp", SHA256_SEED, digits=8, algorithm="sha256", pw=pw)
    r6 = pyotp.HOTP(base64.b32encode(SHA1_SEED).decode(), digits=6)
    r8 = pyotp.HOTP(base64.b32encode(SHA256_SEED).decode(), digits=8, digest=__import__("hashlib").sha256)
    assert v.verify("mia", pw + r6.at(1)).serial == s6
    assert v.verify("mia", pw + r8.at(1)).serial == s8
    assert v.verify("mia", pw, r6.at(2)).serial == s6  # separate fields
    assert not v.verify("mia", pw + r6.at(2)).accepted  # replay
    assert v.verify("mia", pw[:-1] + r6.at(3)).reason == "wrong-password"
    assert v.verify("mia", pw + r8.at(2)).accepted


def test_users_without_2fa_use_the_password_alone(v):
    v.add_user("ned", "secret 2024", twofa=False)
    assert v.verify("ned", "secret 2024").reason == "password"
    assert not v.verify("ned", "secret 202").accepted
    assert v.verify("ned", "secret 2024", "123456").reason == "unexpected-code"  # refused, like any cause
    s = enrol(v, "olga", "hotp", SHA1_SEED)
    v.set_twofa("olga", False)
    assert v.verify("olga", PW).accepted
    v.set_twofa("olga", True)
    assert not v.verify("olga", PW + "000000").accepted
    assert v.token(s).state == "active"


# --- bad input: one clear error, nothing written --------------------------------------------------


def test_bad_input_writes_nothing(v, db):
    s = enrol(v, "pam", "hotp", SHA1_SEED)
    bad_serial = s[:-1] + str((int(s[-1]) + 1) % 10)
    before = databases.dump(db)
    cases = [
        (BadInput, lambda: v.link("pam", bad_serial, "123456")),
        (BadInput, lambda: v.resync(s, "123456", "12345")),
        (BadInput, lambda: v.verify("pam", PW + "\udcff" + "123456")),  # bytes that were not UTF-8
        (BadInput, lambda: v.add_user("bad name", PW)),
        (BadInput, lambda: v.add_user("quinn", "short")),
        (AlreadyExists, lambda: v.add_user("pam", PW)),
        (AlreadyExists, lambda: v.import_records([TokenRecord(s, "hotp", "sha1", 6, SHA1_SEED)])),
    ]
    for exc_type, call in cases:
        with pytest.raises(exc_type) as exc:
            call()
        msg = str(exc.value)
        assert "\n" not in msg and msg
        assert PW not in msg and "123456" not in msg
    after = databases.dump(db)
    assert after["audit"][:-1] == before["audit"] and after["audit"][-1][7] == "invalid UTF-8"
    assert {t: r for t, r in after.items() if t != "audit"} == {t: r for t, r in before.items() if t != "audit"}
    # at a login, malformed input and unknown users are refusals like any other (audited, counted)
    for call in (
        lambda: v.check_code("nobody", "123456"),
        lambda: v.verify("nobody", PW + "123456"),
        lambda: v.check_code("pam", "12a456"),
        lambda: v.check_code("pam", "1234567"),
        lambda: v.verify("pam", PW, "12345"),
        lambda: v.verify("pam", PW + "12345x"),
    ):
        assert not call().accepted


# --- keys and migrations ----------------------------------------------------------------------------


def test_key_file_created_0600_and_wrong_key_refused(tmp_path, make_db, monkeypatch):
    monkeypatch.delenv("KEYFOB_KEY", raising=False)
    a, b = make_db("a"), make_db("b")
    kf = tmp_path / "conf" / "verifier.key"
    Verifier.init(a, key_file=kf, policy=Policy(password_profile="fast")).close()
    assert stat.S_IMODE(os.stat(kf).st_mode) == 0o600
    Verifier.open(a, key_file=kf).close()
    other = tmp_path / "other.key"
    Verifier.init(b, key_file=other).close()
    with pytest.raises(KeyFileError, match="does not belong"):
        Verifier.open(a, key_file=other)
    os.chmod(kf, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        Verifier.open(a, key_file=kf)
    os.chmod(kf, 0o600)
    monkeypatch.setenv("KEYFOB_KEY", kf.read_text().strip())
    Verifier.open(a).close()
    monkeypatch.setenv("KEYFOB_KEY", "not base64 at all")
    with pytest.raises(KeyFileError, match="KEYFOB_KEY"):
        Verifier.open(a)
    with pytest.raises(AlreadyExists):
        Verifier.init(a, key_file=kf)
    missing = make_db("missing")  # never initialised
    with pytest.raises(DatabaseError, match="does not exist|not a keyfob database"):
        Verifier.open(missing, key_file=kf)


def _assert_models_match(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from keyfob.verifier.models import metadata

    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def test_older_database_is_upgraded_on_open(db, clock):
    from alembic import command

    v = make(db, clock)
    s = enrol(v, "rita", "hotp", SHA1_SEED)
    v.close()
    engine = vdb.make_engine(db, must_exist=True)
    vdb.write(engine, lambda conn: command.downgrade(vdb._alembic_config(conn), "0001"))
    assert vdb.current_revision(engine) == "0001"
    schema = databases.schema(db)
    assert "ix_audit_user_name" not in schema["audit"][1]
    assert schema["tokens"][0]["serial"] == schema["audit"][0]["serial"] == "VARCHAR(16)"
    engine.dispose()

    v = Verifier.open(db, key=b"K" * 32, policy=Policy(password_profile="fast"), clock=clock)
    assert vdb.current_revision(v._engine) == vdb.head_revision() == "0008"
    schema = databases.schema(db)
    assert {"ix_audit_user_name", "ix_audit_serial"} <= schema["audit"][1]
    assert schema["tokens"][0]["serial"] == schema["audit"][0]["serial"] == "VARCHAR(64)"
    _assert_models_match(v._engine)
    ref = pyotp.HOTP(base64.b32encode(SHA1_SEED).decode())
    assert v.verify("rita", PW + ref.at(1)).serial == s  # data survived
    v.close()


def test_a_0002_database_takes_long_vendor_serials_after_the_upgrade(db, clock):
    """A database made by the release whose head was 0002 (16-character serial columns) opens with
    this one, is widened by 0003 (and 0004 adds its columns) (a table copy on SQLite), keeps its data, constraints and
    indexes, and then holds a 64-character vendor serial in the inventory and the audit log."""
    from alembic import command

    # The 0002 release's database, with a token in use: made at the head and taken down to 0002
    # (playing the old release with today's code stopped working once the tokens table grew, 0004).
    v = make(db, clock)
    s = enrol(v, "sara", "hotp", SHA1_SEED)
    ref = pyotp.HOTP(base64.b32encode(SHA1_SEED).decode())
    assert v.verify("sara", PW + ref.at(1)).accepted
    v.close()
    engine = vdb.make_engine(db, must_exist=True)
    vdb.write(engine, lambda conn: command.downgrade(vdb._alembic_config(conn), "0002"))
    assert vdb.current_revision(engine) == "0002"
    old = databases.schema(db)
    assert old["tokens"][0]["serial"] == old["audit"][0]["serial"] == "VARCHAR(16)"
    engine.dispose()

    v = Verifier.open(db, key=b"K" * 32, policy=Policy(password_profile="fast"), clock=clock)
    assert vdb.current_revision(v._engine) == vdb.head_revision()
    new = databases.schema(db)
    assert new["tokens"][0]["serial"] == new["audit"][0]["serial"] == "VARCHAR(64)"
    assert set(new) == set(old) | {"throttle", "api_keys"}  # added by 0004 and 0006
    for table, (cols, idx, *keys) in old.items():  # only the two serial columns changed (0004 adds some)
        assert new[table][1] - {"ix_audit_ts"} == idx, table
        assert new[table][2:] == tuple(keys), table  # unique constraints, foreign keys
        changed = {c for c in cols if new[table][0][c] != cols[c]}
        assert changed == ({"serial"} if table in ("tokens", "audit") else set()), table
    _assert_models_match(v._engine)
    if databases.kind(db) == "sqlite":  # the table copy kept every row's references sound
        with v._engine.connect() as conn:
            assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"

    assert v.verify("sara", PW + ref.at(2)).serial == s  # data and state survived
    assert not v.verify("sara", PW + ref.at(1)).accepted  # the counter too: no replay
    long_serial = "vendor:" + "7" * 57
    assert len(long_serial) == 64
    v.import_records([TokenRecord(long_serial, "hotp", "sha256", 8, SHA256_SEED)])
    ref8 = pyotp.HOTP(base64.b32encode(SHA256_SEED).decode(), digits=8, digest=__import__("hashlib").sha256)
    assert v.link("sara", long_serial, ref8.at(0)).accepted
    assert v.verify("sara", PW + ref8.at(1)).serial == long_serial
    assert v.token(long_serial).counter == 2
    rows = v.audit(serial=long_serial, limit=None)
    assert [r.action for r in rows] == ["validate", "token-link", "token-import"]
    assert {r.serial for r in rows} == {long_serial}
    with pytest.raises(AlreadyExists):  # the unique constraint came through the table copy
        v.import_records([TokenRecord(long_serial, "hotp", "sha1", 6, SHA1_SEED)])
    with pytest.raises(BadInput):
        v.import_records([TokenRecord(long_serial + "8", "hotp", "sha1", 6, SHA1_SEED)])
    v.close()

    # going back below 0003 would cut the long serial: refused, nothing changed
    engine = vdb.make_engine(db, must_exist=True)
    with pytest.raises(RuntimeError, match="longer than 16"):
        vdb.write(engine, lambda conn: command.downgrade(vdb._alembic_config(conn), "0002"))
    assert vdb.current_revision(engine) == vdb.head_revision()
    assert databases.schema(db) == new
    engine.dispose()


def test_models_match_the_migrations(v):
    _assert_models_match(v._engine)


def test_newer_schema_is_refused(db, clock):
    make(db, clock).close()
    engine = vdb.make_engine(db, must_exist=True)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(DatabaseError, match="newer"):
        Verifier.open(db, key=b"K" * 32)


# --- 7 (service level): the verifier and pyotp agree ------------------------------------------------


@pytest.fixture(scope="module")
def shared(databases, db_kind, tmp_path_factory):
    clock = Clock()
    target = databases.new(db_kind, tmp_path_factory.mktemp("hyp"), "h")
    ver = Verifier.init(
        target,
        key=b"H" * 32,
        policy=Policy(password_profile="fast", user_rate_limit=0, max_fail=10**6),
        clock=clock,
    )
    ver.add_user("hyp", PW)
    yield ver, clock
    ver.close()
    databases.drop(target)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.binary(min_size=16, max_size=32),
    counter=st.integers(0, 2**32),
    offset=st.integers(-2, 13),
    digits=st.sampled_from([6, 8]),
)
def test_service_hotp_agrees_with_pyotp(shared, seed, counter, offset, digits):
    v, _ = shared
    for other in v.list_tokens(user="hyp", state="active"):
        v.revoke(other.serial)  # one active token, so the answer is this token's
    ref = pyotp.HOTP(base64.b32encode(seed).decode(), digits=digits)
    s = serial()
    v.import_records([TokenRecord(s, "hotp", "sha1", digits, seed, counter=counter)])
    assert v.link("hyp", s, ref.at(counter)).accepted
    start = counter + 1
    code = ref.at(max(start + offset, 0))
    expected = any(ref.verify(code, c) for c in range(start, start + 10))
    assert v.check_code("hyp", code).accepted == expected


@settings(max_examples=40, deadline=None)
@given(
    seed=st.binary(min_size=16, max_size=32),
    now=st.integers(10**6, 4 * 10**9),
    offset=st.integers(-3, 3),
    period=st.sampled_from([30, 60]),
)
def test_service_totp_agrees_with_pyotp(shared, seed, now, offset, period):
    v, clock = shared
    ref = pyotp.TOTP(base64.b32encode(seed).decode(), interval=period)
    clock.t = now
    s = serial()
    v.import_records([TokenRecord(s, "totp", "sha1", 6, seed, period=period)])
    for other in v.list_tokens(user="hyp", state="active"):
        v.revoke(other.serial)
    code = ref.at(now + offset * period)
    expected = ref.verify(code, for_time=now, valid_window=1)
    assert v.link("hyp", s, code).accepted == expected
