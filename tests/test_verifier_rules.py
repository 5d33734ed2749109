"""The verifier's pure rules: windows, resync, lockout, rate limit, one-field split, backup codes.

Also acceptance point 7: for random seeds, counters and times, the rules and pyotp agree on which
codes are valid (pyotp is the independent implementation here).
"""

import base64

import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keyfob.otp import HotpKey
from keyfob.verifier import rules
from keyfob.verifier.errors import BadInput
from keyfob.verifier.rules import Policy

SEED = b"12345678901234567890"
RFC4226 = ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"]


def key(seed=SEED, digits=6, algorithm="sha1"):
    return HotpKey(seed, digits=digits, algorithm=algorithm)


def test_hotp_window_edges_and_rfc_values():
    k = key()
    # counter 0, window 10: the RFC 4226 codes for 0..9 are all found at their counter
    for c, code in enumerate(RFC4226):
        assert rules.hotp_check(k, 0, code, 10) == c
    # from counter 1, code 0 is behind the counter: refused
    assert rules.hotp_check(k, 1, RFC4226[0], 10) is None
    # window 3 from 0: counter 2 is the last one inside, 3 is just beyond
    assert rules.hotp_check(k, 0, RFC4226[2], 3) == 2
    assert rules.hotp_check(k, 0, RFC4226[3], 3) is None


def test_totp_window_edges_exact_step_boundaries():
    k = key()
    period = 30
    step = 50_000_000
    for now in (step * period, step * period + 29.999):  # first and last instant of the step
        for off in (-1, 0, 1):
            assert rules.totp_check(k, now, period, 0, -1, k.code(step + off), 1) == (step + off, off)
        for off in (-2, 2):
            assert rules.totp_check(k, now, period, 0, -1, k.code(step + off), 1) is None
    # one instant later it is the next step: step - 1 falls out of the window
    assert rules.totp_check(k, (step + 1) * period, period, 0, -1, k.code(step - 1), 1) is None


def test_totp_no_reuse_and_no_going_back():
    k = key()
    now, step = 30 * 1000, 1000
    assert rules.totp_check(k, now, 30, 0, step, k.code(step), 1) is None  # same step again
    assert rules.totp_check(k, now, 30, 0, step, k.code(step - 1), 1) is None  # earlier step
    assert rules.totp_check(k, now, 30, 0, step, k.code(step + 1), 1) == (step + 1, 1)


def test_totp_drift_moves_the_window():
    k = key()
    now, step = 30 * 1000, 1000
    assert rules.totp_check(k, now, 30, 0, -1, k.code(step + 3), 1) is None
    assert rules.totp_check(k, now, 30, 2, -1, k.code(step + 3), 1) == (step + 3, 3)
    assert rules.totp_check(k, now, 30, 2, -1, k.code(step), 1) is None  # now+2 ±1 excludes now


def test_hotp_resync_consecutive_and_not():
    k = key()
    codes = k.codes(0, 1100)
    assert rules.hotp_resync(k, 0, codes[500], codes[501], 1000) == 502
    assert rules.hotp_resync(k, 0, codes[500], codes[502], 1000) is None
    assert rules.hotp_resync(k, 0, codes[999], codes[1000], 1000) == 1001  # last pair inside
    assert rules.hotp_resync(k, 0, codes[1000], codes[1001], 1000) is None  # beyond


def test_totp_resync_a_day_each_way():
    k = key()
    now = 30 * 100_000
    ahead = 100_000 + 2880  # exactly one day ahead (30 s steps)
    assert rules.totp_resync(k, now, 30, -1, k.code(ahead - 1), k.code(ahead), 86400) == (ahead, 2880)
    behind = 100_000 - 2879
    assert rules.totp_resync(k, now, 30, -1, k.code(behind - 1), k.code(behind), 86400) == (behind, -2879)
    assert rules.totp_resync(k, now, 30, -1, k.code(ahead), k.code(ahead + 1), 86400) is None
    # not at or before the last accepted step
    assert rules.totp_resync(k, now, 30, ahead, k.code(ahead - 1), k.code(ahead), 86400) is None


def test_lockout_counting_and_timeout():
    p = Policy(max_fail=3, lock_seconds=100)
    fc, lu = 0, None
    for i in range(1, 3):
        fc, lu = rules.after_failure(fc, lu, 1000, p)
        assert (fc, lu) == (i, None)
        assert not rules.is_locked(fc, lu, 1000, p)
    fc, lu = rules.after_failure(fc, lu, 1000, p)
    assert (fc, lu) == (3, 1100)
    assert rules.is_locked(fc, lu, 1099.9, p)
    assert not rules.is_locked(fc, lu, 1100, p)
    # after the timeout a new failure starts counting from 1
    assert rules.after_failure(fc, lu, 1100, p) == (1, None)
    # admin-only lock
    p2 = Policy(max_fail=1, lock_seconds=None)
    fc, lu = rules.after_failure(0, None, 5, p2)
    assert rules.is_locked(fc, lu, 10**12, p2)


def test_throttle_backs_off_per_failure_and_forgets():
    p = Policy(user_rate_limit=2, user_rate_window=60, backoff_max=10)
    assert [rules.backoff(n, p) for n in range(1, 8)] == [0, 1, 2, 4, 8, 10, 10]
    assert rules.backoff(10**6, p) == 10 and rules.backoff(99, Policy(user_rate_limit=0)) == 0
    k = rules.throttle_reserve((0, 100, 100), 100, p)
    assert k == (1, 100, 100)  # the first failure is free: the next attempt may come at once
    k = rules.throttle_reserve(k, 100, p)
    assert k == (2, 100, 101)  # the second starts the back-off
    assert rules.throttle_reserve(k, 100.5, p) is None  # in back-off: refused, nothing counted
    k = rules.throttle_reserve(k, 101, p)
    assert k == (3, 101, 103)  # and each failure doubles it
    assert rules.throttle_reserve(k, 102, p) is None
    # 60 s after the last failure the count is forgotten, whatever the back-off said
    assert rules.throttle_reserve((9, 101, 10**9), 161, p) == (1, 161, 161)
    # another thread's clock read a moment later reserved first: this attempt is not refused for it
    assert rules.throttle_reserve((1, 100.002, 0), 100.001, p) == (2, 100.001, 101.001)
    assert rules.throttle_reserve((0, 100.002, 0), 100.001, p) == (1, 100.001, 0)


def test_counter_windows_stop_below_2_63():
    k = key()
    top = rules.MAX_COUNTER
    assert top == 2**63 - 1
    assert rules.hotp_check(k, top - 2, k.code(top - 1), 10) == top - 1  # new counter: top
    assert rules.hotp_check(k, top - 2, k.code(top), 10) is None  # its new counter would not fit
    assert rules.hotp_check(k, top, k.code(top), 10) is None
    assert rules.hotp_resync(k, top - 3, k.code(top - 2), k.code(top - 1), 1000) == top
    assert rules.hotp_resync(k, top - 3, k.code(top - 1), k.code(top), 1000) is None


def test_split_field_passwords_ending_in_digits():
    assert rules.split_field("hunter2" + "123456", {6}) == [("hunter2", "123456")]
    assert rules.split_field("pw12345678" + "12345678", {6, 8}) == [
        ("pw1234567812", "345678"),
        ("pw12345678", "12345678"),
    ]
    assert rules.split_field("123456", {6}) == []  # no password left
    assert rules.split_field("pass12345a", {6}) == []
    assert rules.split_field("pass１２３４５６", {6}) == []  # fullwidth digits are not digits here


def test_code_format():
    assert rules.check_code_format("012345", {6}) == "012345"
    for bad in ("12345a", "12345", "1234567", "", " 12345", "١٢٣٤٥٦"):
        with pytest.raises(BadInput) as exc:
            rules.check_code_format(bad, {6})
        assert bad.strip() == "" or bad not in str(exc.value)


def test_backup_codes_format():
    codes = {rules.new_backup_code() for _ in range(200)}
    assert len(codes) == 200
    for c in codes:
        n = rules.normalize_backup_code(c)
        assert n is not None and len(n) == 12 and set(n) <= set(rules.BACKUP_ALPHABET)
        assert rules.normalize_backup_code(c.upper().replace("-", "")) == n
    assert rules.normalize_backup_code("123456") is None
    assert rules.normalize_backup_code("abcd-efgh-ijk1") is None  # i and 1 are not in the alphabet
    c = rules.new_backup_code()
    assert rules.split_backup_field("secret99" + c) == [("secret99", c.replace("-", ""))]


# --- acceptance 7: the rules and pyotp agree -----------------------------------------------------

seeds = st.binary(min_size=16, max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    seed=seeds,
    counter=st.integers(0, 2**40),
    offset=st.integers(-3, 14),
    digits=st.sampled_from([6, 8]),
    window=st.integers(1, 12),
)
def test_hotp_agrees_with_pyotp(seed, counter, offset, digits, window):
    ref = pyotp.HOTP(base64.b32encode(seed).decode(), digits=digits)
    code = ref.at(max(counter + offset, 0))
    expected = any(ref.verify(code, c) for c in range(counter, counter + window))
    got = rules.hotp_check(key(seed, digits), counter, code, window)
    assert (got is not None) == expected
    if got is not None:
        assert ref.at(got) == code


@settings(max_examples=150, deadline=None)
@given(
    seed=seeds,
    now=st.floats(600, 4e9, allow_nan=False),
    offset=st.integers(-4, 4),
    digits=st.sampled_from([6, 8]),
    period=st.sampled_from([30, 60]),
    algorithm=st.sampled_from(["sha1", "sha256"]),
)
def test_totp_agrees_with_pyotp(seed, now, offset, digits, period, algorithm):
    import hashlib

    ref = pyotp.TOTP(
        base64.b32encode(seed).decode(), digits=digits, interval=period, digest=getattr(hashlib, algorithm)
    )
    t = max(int(now) + offset * period, 0)
    code = ref.at(t)
    expected = ref.verify(code, for_time=int(now), valid_window=1)
    got = rules.totp_check(key(seed, digits, algorithm), int(now), period, 0, -1, code, 1)
    assert (got is not None) == expected
