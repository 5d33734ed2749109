"""host/keyfob/otp.py against the RFC test vectors and pyotp."""

from __future__ import annotations

import base64
import datetime
import hashlib
import random
import re

import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keyfob import otp

# RFC 4226 appendix D: secret "12345678901234567890", counters 0..9:
# (HMAC-SHA-1(secret, counter) in hex, HOTP value with 6 digits).
RFC4226_SECRET = b"12345678901234567890"
RFC4226 = [
    ("cc93cf18508d94934c64b65d8ba7667fb7cde4b0", "755224"),
    ("75a48a19d4cbe100644e8ac1397eea747a2d33ab", "287082"),
    ("0bacb7fa082fef30782211938bc1c5e70416ff44", "359152"),
    ("66c28227d03a2d5529262ff016a1e6ef76557ece", "969429"),
    ("a904c900a64b35909874b33e61c5938a8e15ed1c", "338314"),
    ("a37e783d7b7233c083d4f62926c7a25f238d0316", "254676"),
    ("bc9cd28561042c83f219324d3c607256c03272ae", "287922"),
    ("a4fb960c0bc06e1eabb804e5b397cdc4b45596fa", "162583"),
    ("1b3c89f65e6c9e883012052823443f048b4332db", "399871"),
    ("1637409809a679dc698207310c8c7fc07290d9e5", "520489"),
]

# RFC 6238 appendix B: 8 digits, 30 s steps; the seed is the ASCII digits repeated to the hash's length.
RFC6238_SEEDS = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890" * 6 + b"1234",  # SHA-512: imported tokens only, never a keyfob token's
}
RFC6238 = [
    # (unix time, T in hex, sha1 TOTP, sha256 TOTP, sha512 TOTP)
    (59, "0000000000000001", "94287082", "46119246", "90693936"),
    (1111111109, "00000000023523EC", "07081804", "68084774", "25091201"),
    (1111111111, "00000000023523ED", "14050471", "67062674", "99943326"),
    (1234567890, "000000000273EF07", "89005924", "91819424", "93441116"),
    (2000000000, "0000000003F940AA", "69279037", "90698825", "38618901"),
    (20000000000, "0000000027BC86AA", "65353130", "77737706", "47863826"),
]
RFC6238_CASES = [
    (t, step, alg, code)
    for t, step, *codes in RFC6238
    for alg, code in zip(("sha1", "sha256", "sha512"), codes, strict=True)
]


def pyotp_hotp(secret: bytes, counter: int, digits: int, alg: str) -> str:
    b32 = base64.b32encode(secret).decode()
    return pyotp.HOTP(b32, digits=digits, digest=getattr(hashlib, alg)).at(counter)


def pyotp_totp(secret: bytes, t: int, period: int, digits: int, alg: str) -> str:
    b32 = base64.b32encode(secret).decode()
    when = datetime.datetime.fromtimestamp(t, tz=datetime.UTC)  # tz-aware: no local-time trap
    return pyotp.TOTP(b32, digits=digits, digest=getattr(hashlib, alg), interval=period).at(when)


@pytest.mark.parametrize("counter", range(10))
def test_rfc4226_appendix_d(counter):
    mac_hex, code = RFC4226[counter]
    assert otp.hotp(RFC4226_SECRET, counter) == code
    key = otp.HotpKey(RFC4226_SECRET)
    assert key.mac(counter.to_bytes(8, "big")).hex() == mac_hex
    assert key.code(counter) == code


def test_rfc4226_window():
    assert otp.HotpKey(RFC4226_SECRET).codes(0, 10) == [code for _, code in RFC4226]
    assert otp.HotpKey(RFC4226_SECRET).codes(3, 4) == [code for _, code in RFC4226[3:7]]


@pytest.mark.parametrize("t,step,alg,code", RFC6238_CASES)
def test_rfc6238_appendix_b(t, step, alg, code):
    seed = RFC6238_SEEDS[alg]
    assert otp.totp_step(t, 30) == int(step, 16)
    assert otp.totp(seed, t, period=30, digits=8, algorithm=alg) == code
    assert otp.HotpKey(seed, digits=8, algorithm=alg).code(int(step, 16)) == code


# pyotp wants >= 14 bytes; > 64 bytes (> 128 for SHA-512) exercises the hashed-key rule of RFC 2104
seeds = st.binary(min_size=16, max_size=160)
digits = st.sampled_from([6, 8])
algs = st.sampled_from(["sha1", "sha256", "sha512"])


@settings(max_examples=300, deadline=None)
@given(seeds, st.integers(0, 2**64 - 1), digits, algs)
def test_hotp_agrees_with_pyotp(secret, counter, nd, alg):
    want = pyotp_hotp(secret, counter, nd, alg)
    assert otp.hotp(secret, counter, nd, alg) == want
    assert otp.HotpKey(secret, nd, alg).code(counter) == want


@settings(max_examples=300, deadline=None)
@given(seeds, st.integers(0, 2**37), st.sampled_from([30, 60]), digits, algs)
def test_totp_agrees_with_pyotp(secret, t, period, nd, alg):
    assert otp.totp_step(t, period) == t // period
    assert otp.totp(secret, t, period, nd, alg) == pyotp_totp(secret, t, period, nd, alg)


@settings(max_examples=50, deadline=None)
@given(seeds, st.integers(0, 2**40), st.integers(0, 40), digits, algs)
def test_window_agrees_with_pyotp(secret, start, count, nd, alg):
    key = otp.HotpKey(secret, nd, alg)
    want = [pyotp_hotp(secret, c, nd, alg) for c in range(start, start + count)]
    assert key.codes(start, count) == want
    if count:
        i = random.Random(start).randrange(count)
        assert key.find(want[i], start, count) == want.index(want[i]) + start


def test_find_misses_and_window_edges():
    key = otp.HotpKey(RFC4226_SECRET)
    assert key.find("755224", 0, 10) == 0
    assert key.find("520489", 0, 10) == 9
    assert key.find("520489", 0, 9) is None  # just outside the window
    assert key.find("12345", 0, 10) is None
    assert key.find("７５５２２４", 0, 10) is None  # non-ASCII digits never match
    assert key.codes(2**64 - 1, 1) == [pyotp_hotp(RFC4226_SECRET, 2**64 - 1, 6, "sha1")]
    with pytest.raises(otp.OtpError):
        key.codes(2**64 - 1, 2)


def test_float_time_and_step_boundaries():
    s = RFC6238_SEEDS["sha1"]
    assert otp.totp(s, 59.999, 30, 8) == "94287082"
    assert otp.totp_step(29.99, 30) == 0 and otp.totp_step(30, 30) == 1
    assert otp.totp_step(59, 60) == 0 and otp.totp_step(60, 60) == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda: otp.hotp(RFC4226_SECRET, 0, digits=5),
        lambda: otp.hotp(RFC4226_SECRET, 0, digits=9),
        lambda: otp.hotp(RFC4226_SECRET, 0, algorithm="md5"),
        lambda: otp.hotp(RFC4226_SECRET, 0, algorithm="sha384"),
        lambda: otp.hotp(RFC4226_SECRET, -1),
        lambda: otp.hotp(RFC4226_SECRET, 2**64),
        lambda: otp.totp(RFC4226_SECRET, -1),
        lambda: otp.totp_step(100, 0),
        lambda: otp.HotpKey(RFC4226_SECRET, digits=10),
        lambda: otp.HotpKey(RFC4226_SECRET, algorithm="md5"),
        lambda: otp.key_check_value(RFC4226_SECRET, "md5"),
    ],
)
def test_rejects_bad_parameters(call):
    with pytest.raises(otp.OtpError):
        call()


def test_repr_hides_key():
    secret = bytes(range(20))
    r = repr(otp.HotpKey(secret))
    assert secret.hex() not in r and "HotpKey" in r


def test_key_check_value_shape_and_definition():
    import hmac as std_hmac

    rng = random.Random(6238)
    values = set()
    for alg in ("sha1", "sha256"):
        for _ in range(20):
            secret = rng.randbytes(20 if alg == "sha1" else 32)
            kcv = otp.key_check_value(secret, alg)
            assert re.fullmatch("[a-p]{6}", kcv)
            nibbles = std_hmac.new(secret, b"keyfob-kcv", alg).hexdigest()[:6]
            assert kcv == "".join("abcdefghijklmnop"[int(c, 16)] for c in nibbles)
            values.add(kcv)
    assert len(values) == 40  # depends on the seed and the algorithm
    assert otp.key_check_value(RFC4226_SECRET, "sha1") != otp.key_check_value(RFC4226_SECRET, "sha256")


@pytest.mark.parametrize("alg", ["sha1", "sha256"])
def test_key_check_value_is_not_a_code(alg):
    # Provisioning shows the KCV to prove the seed landed; it must not be one of the token's codes.
    rng = random.Random(4226)
    for secret in (rng.randbytes(20 if alg == "sha1" else 32) for _ in range(2)):
        kcv = otp.key_check_value(secret, alg)
        codes = otp.HotpKey(secret, 6, alg).codes(0, 10001)
        assert codes[:3] == [pyotp_hotp(secret, c, 6, alg) for c in range(3)]
        assert kcv not in set(codes)
