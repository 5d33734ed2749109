"""The verifier's rule objects per kind of code (keyfob.verifier.modes), with pyotp as the oracle:
what a login matches, what counts as a replay, what resync finds and what it stores."""

import base64
from types import SimpleNamespace

import pyotp
from keyfob import params
from keyfob.otp import HotpKey
from keyfob.verifier import modes
from keyfob.verifier.crypto import SeedBox
from keyfob.verifier.rules import Policy

SEED = b"12345678901234567890"
B32 = base64.b32encode(SEED).decode()
P = Policy()


def tok(mode, **kw):
    row = dict(mode=mode, counter=0, last_step=-1, drift=0, sync_drift=0, period=30) | kw
    return SimpleNamespace(**row)


def test_hotp_login_window_replay_and_resync():
    key, hotp = HotpKey(SEED), pyotp.HOTP(B32)
    t = tok("hotp", counter=1000)
    assert modes.of(t) is modes.HOTP
    # inside the look-ahead window (10 from the next expected counter): the counter after it
    assert modes.HOTP.match(key, t, hotp.at(1009), 0, P) == modes.Move("counter", 1010)
    assert modes.HOTP.match(key, t, hotp.at(1010), 0, P) is None
    # a used code is a replay, not a match; an unused one beyond the window is neither
    assert modes.HOTP.match(key, t, hotp.at(999), 0, P) is None
    assert modes.HOTP.replayed(key, t, hotp.at(999), 0, P)
    assert not modes.HOTP.replayed(key, t, hotp.at(1010), 0, P)
    # resync: narrow (50 counters) finds 1040/1041, not 1100/1101; the wide search does
    assert modes.HOTP.resync(key, t, hotp.at(1040), hotp.at(1041), 0, P, False) == modes.Move("counter", 1042)
    assert modes.HOTP.resync(key, t, hotp.at(1100), hotp.at(1101), 0, P, False) is None
    assert modes.HOTP.resync(key, t, hotp.at(1100), hotp.at(1101), 0, P, True) == modes.Move("counter", 1102)
    assert modes.HOTP.synced(modes.Move("counter", 1)) == {} and modes.HOTP.exported_counter(t) == 1000


def test_totp_login_window_replay_drift_and_resync():
    key, totp = HotpKey(SEED), pyotp.TOTP(B32)
    now = 1_700_000_000.0
    step = int(now // 30)
    t = tok("totp")
    assert modes.of(t) is modes.TOTP
    # one step ahead is inside the window and teaches a drift of one step
    assert modes.TOTP.match(key, t, totp.at(now + 30), now, P) == modes.Move("last_step", step + 1, 1)
    assert modes.TOTP.match(key, t, totp.at(now + 60), now, P) is None
    # once that step is used, its code is a replay
    used = tok("totp", last_step=step + 1, drift=1)
    assert modes.TOTP.match(key, used, totp.at(now + 30), now, P) is None
    assert modes.TOTP.replayed(key, used, totp.at(now + 30), now, P)
    assert not modes.TOTP.replayed(key, t, totp.at(now + 30), now, P)
    # resync: narrow (10 steps each side of now + drift) finds a clock 5 steps fast, not 2 hours fast
    move = modes.TOTP.resync(key, t, totp.at(now + 150), totp.at(now + 180), now, P, False)
    assert move == modes.Move("last_step", step + 6, 6)
    assert modes.TOTP.synced(move) == {"sync_drift": 6} and modes.TOTP.detail(move) == "drift +6 steps"
    far = (totp.at(now + 7200), totp.at(now + 7230))
    assert modes.TOTP.resync(key, t, *far, now, P, False) is None
    assert modes.TOTP.resync(key, t, *far, now, P, True) == modes.Move("last_step", step + 241, 241)
    assert modes.TOTP.exported_counter(t) == 0


def test_backup_codes_parse_split_and_find():
    code = modes.BACKUP.new()
    canon = modes.BACKUP.parse(code.upper())
    assert canon == code.replace("-", "") and modes.BACKUP.parse("not-a-code") is None
    assert modes.BACKUP.split("pw" + code) == [("pw", canon)]
    box = SeedBox(bytes(range(32)))
    rows = [(i, box.backup_hash(7, modes.BACKUP.parse(modes.BACKUP.new()))) for i in (1, 2)]
    rows.append((3, box.backup_hash(7, canon)))
    assert modes.BACKUP.find(rows, box.backup_hash(7, canon)) == 3
    assert modes.BACKUP.find(rows, box.backup_hash(8, canon)) is None  # another user's hash


def test_a_rule_for_every_mode_a_record_may_have():
    assert list(modes.MODES) == list(params.RECORDS.modes)
    for name in params.RECORDS.modes:
        assert modes.of(tok(name)).name == name
