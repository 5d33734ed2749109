"""firmware/otp.py under the real MicroPython: RFC vectors, pyotp agreement, host agreement, allocation."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from keyfob import otp as host_otp
from mpy import run_mpy, run_mpy_json
from test_otp_host import RFC4226, RFC4226_SECRET, RFC6238, RFC6238_SEEDS, pyotp_hotp, pyotp_totp

# One MicroPython script evaluates a batch of cases:
#   ["hotp", seed_hex, counter, digits, alg]        -> code string (zero-padded)
#   ["totp", seed_hex, unix_time, period, digits, alg] -> [step, code string]
#   ["hmac", seed_hex, msg_hex, alg]                -> hex HMAC
#   ["kcv", seed_hex, alg]                          -> KCV string
EVAL = """
import otp
from binascii import hexlify, unhexlify
def fmt(code, digits):
    s = str(code)
    return '0' * (digits - len(s)) + s
out = []
for c in DATA:
    k = unhexlify(c[1])
    if c[0] == 'hotp':
        out.append(fmt(otp.hotp(k, c[2], c[3], c[4]), c[3]))
    elif c[0] == 'totp':
        t, period, digits, alg = c[2], c[3], c[4], c[5]
        code = otp.totp(k, t, period, digits, alg)
        assert code == otp.Hotp(k, alg).totp(t, period, digits)
        out.append([otp.totp_step(t, period), fmt(code, digits)])
    elif c[0] == 'hmac':
        out.append(hexlify(otp.hmac_digest(k, unhexlify(c[2]), c[3])).decode())
    else:
        out.append(otp.key_check_value(k, c[2]))
emit(out)
"""


def run_cases(cases):
    return run_mpy_json(EVAL, cases)


def test_rfc4226_appendix_d():
    seed = RFC4226_SECRET.hex()
    cases = [["hmac", seed, c.to_bytes(8, "big").hex(), "sha1"] for c in range(10)]
    cases += [["hotp", seed, c, 6, "sha1"] for c in range(10)]
    got = run_cases(cases)
    assert got[:10] == [mac for mac, _ in RFC4226]
    assert got[10:] == [code for _, code in RFC4226]


def test_rfc6238_appendix_b():
    cases, want = [], []
    for t, step, c1, c2, _sha512 in RFC6238:  # the firmware has SHA-1 and SHA-256 only
        for alg, code in (("sha1", c1), ("sha256", c2)):
            cases.append(["totp", RFC6238_SEEDS[alg].hex(), t, 30, 8, alg])
            want.append([int(step, 16), code])
    assert run_cases(cases) == want


case = st.one_of(
    st.tuples(
        st.just("hotp"),
        st.binary(min_size=16, max_size=100),
        st.integers(0, 2**64 - 1),
        st.sampled_from([6, 8]),
        st.sampled_from(["sha1", "sha256"]),
    ),
    st.tuples(
        st.just("totp"),
        st.binary(min_size=16, max_size=100),
        st.integers(0, 2**37),
        st.sampled_from([30, 60]),
        st.sampled_from([6, 8]),
        st.sampled_from(["sha1", "sha256"]),
    ),
)


@settings(
    max_examples=6,
    deadline=None,
    # no shrinking: each shrink step is a micropython run; the assertion reports the differing cases
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(st.lists(case, min_size=100, max_size=100))
def test_agrees_with_pyotp(batch):
    # 6 batches of 100 cases: 600 random seeds/counters/times, 6 micropython runs.
    cases, want = [], []
    for c in batch:
        if c[0] == "hotp":
            _, seed, counter, nd, alg = c
            cases.append(["hotp", seed.hex(), counter, nd, alg])
            want.append(pyotp_hotp(seed, counter, nd, alg))
        else:
            _, seed, t, period, nd, alg = c
            cases.append(["totp", seed.hex(), t, period, nd, alg])
            want.append([t // period, pyotp_totp(seed, t, period, nd, alg)])
    got = run_cases(cases)
    bad = [(c, g, w) for c, g, w in zip(cases, got, want) if g != w]
    assert not bad, f"{len(bad)} of {len(cases)} differ, e.g. (case, micropython, pyotp): {bad[:3]!r}"


def test_key_check_value_matches_host():
    rng = random.Random(2104)
    cases, want = [], []
    for alg, n in (("sha1", 20), ("sha256", 32), ("sha1", 70)):
        for _ in range(10):
            seed = rng.randbytes(n)
            cases.append(["kcv", seed.hex(), alg])
            want.append(host_otp.key_check_value(seed, alg))
    assert run_cases(cases) == want


def test_small_heap_and_little_allocation_per_code():
    # A press after set-up allocates only the two hash objects and digests, in a small chip's heap.
    out = run_mpy(
        """
import gc, otp
h = otp.Hotp(b'12345678901234567890')
codes = [h.code(c) for c in range(10)]
gc.collect()
before = gc.mem_alloc()
for c in range(100):
    h.code(c)
per_code = (gc.mem_alloc() - before) // 100
print(codes[0], codes[9], per_code)
""",
        heapsize="32K",
    )
    first, last, per_code = out.split()
    assert (first, last) == ("755224", "520489")
    assert 0 < int(per_code) < 1024


def test_rejects_unknown_algorithm():
    out = run_mpy(
        """
import otp
try:
    otp.hotp(b'k' * 20, 0, 6, 'md5')
    print('accepted')
except ValueError:
    print('rejected')
"""
    )
    assert out.strip() == "rejected"
