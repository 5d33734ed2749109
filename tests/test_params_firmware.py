"""The host's table of token parameters (keyfob.params) against the firmware, run under the real
MicroPython: its constants, and what its provisioning request really accepts, one parameter at a
time (so the two cannot drift apart)."""

from keyfob import params
from keyfob.device import frames
from mpy import FIRMWARE, run_mpy_json
from test_protocol import HARNESS, SEED20, SEED32, T0, provision_fields, replies_of

CONSTANTS = """
import otp, proto, store
def stored(d):
    # what a record on the flash may hold: the digits the token's arithmetic computes
    try:
        store.Store._check(bytes(20), 'KF000000013', 'hotp', 'sha1', d, 30)
        return True
    except ValueError:
        return False
emit({
    "stored_digits": [d for d in range(4, 11) if stored(d)],
    "modes": list(store.MODES),
    "algorithms": list(store.ALGORITHMS),
    "digits": list(proto.DIGITS),
    "periods": list(proto.PERIODS),
    "counter_max": store.COUNTER_LAST,
    "code_digits": sorted(otp._MOD),
})
"""

# every case on a fresh token (its own store directory): one PROVISION request, its reply
PROBE = """
import os
rtc = FakeRTC(DATA['true'], 0, DATA['true'])
out = []
for i, wire in enumerate(DATA['wires']):
    d = 'case%d' % i
    os.mkdir(d)
    ctx = Ctx(d + '/', rtc)
    dec = proto.Decoder()
    out.append([binascii.hexlify(r).decode() for r in run_wire(dec, ctx, binascii.unhexlify(wire), 0, 0)])
emit(out)
"""


def test_firmware_constants_are_the_table():
    got = run_mpy_json(CONSTANTS, None, paths=[FIRMWARE])
    k = params.KEYFOB
    assert got == {
        "modes": list(k.modes),
        "algorithms": list(k.algorithms),
        "digits": list(k.digits),
        "periods": list(k.periods),
        "counter_max": k.counter_max,
        "code_digits": list(params.CODE_DIGITS),
        "stored_digits": list(params.CODE_DIGITS),
    }


def test_firmware_provisioning_accepts_exactly_the_table():
    k, r = params.KEYFOB, params.RECORDS
    # one parameter varied at a time, over what the host knows and a little beyond
    trials = {
        "mode": [*r.modes, "motp"],
        "algorithm": [*r.algorithms, "md5"],
        "digits": sorted({*r.digits, *params.CODE_DIGITS, 5, 9, 10}),
        "period": sorted({*r.periods, 15, 45, 90, 120}),
        "counter": [0, k.counter_max - 1, k.counter_max],
    }
    cases = []
    for name, values in trials.items():
        for val in values:
            seed = SEED32 if val == "sha256" else SEED20
            cases.append((name, val, provision_fields(seed, **({"mode": "hotp"} | {name: val}))))
    wires = [frames.encode_json(frames.PROVISION, f).hex() for _, _, f in cases]
    got = run_mpy_json(HARNESS + PROBE, {"true": T0, "wires": wires}, paths=[FIRMWARE])
    accepted = {name: [] for name in trials}
    for (name, val, _), replies in zip(cases, got, strict=True):
        [(ftype, _obj)] = replies_of({"replies": replies})
        if ftype == frames.OK:
            accepted[name].append(val)
    assert accepted == {
        "mode": list(k.modes),
        "algorithm": list(k.algorithms),
        "digits": list(k.digits),
        "period": list(k.periods),
        "counter": [0, k.counter_max - 1],  # the last value is kept, never used: the token is spent
    }
    # what keyfob's firmware takes, the host's records take too
    for name in ("modes", "algorithms", "digits", "periods"):
        assert set(getattr(k, name)) <= set(getattr(r, name))
    assert set(k.digits) <= set(params.CODE_DIGITS)
