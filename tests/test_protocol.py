"""The provisioning protocol (docs/protocol.md): firmware/proto.py under the real MicroPython, against
frames made by the host codec (keyfob.device.frames), and the host client (keyfob.device.client).

(a) scenarios run through proto.Decoder + proto.handle in one micropython process each, with a real
    firmware Store on the unix filesystem and a firmware Clock over a fake chip RTC whose rate we set;
(b) host codec round trips, and a hypothesis fuzz of the device decoder through one long-lived
    micropython process: it never raises, never changes state, and agrees with the host decoder;
(c) TokenClient against a fake transport, and end to end over a pipe to micropython running the
    idle-loop recipe the app uses;
(d) drift learning: SETTIMEs three months apart on a +4.5 ppm clock; the bounds of a locked token.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
import select
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keyfob import otp as host_otp
from keyfob.device import frames
from keyfob.device.client import (
    FrameRejected,
    KcvMismatch,
    ProtocolError,
    Refused,
    TimeSync,
    TokenClient,
)
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from mpy import FIRMWARE, micropython_binary, run_mpy_json

DAY = 86400
T0 = 1_750_000_005  # 2025-06-15, 15 s into a 30 s TOTP step (a 30-day step keeps that)
RNG = random.Random(4242)
SEED20 = RNG.randbytes(20)
SEED32 = RNG.randbytes(32)
SERIAL = make_serial(4711)

# ---------------------------------------------------------------------------------------------
# The device under test: proto + Store + Clock over a fake RTC, in MicroPython.

HARNESS = r"""
import binascii, os, sys
import proto, clock, otp
from store import Store

class FakeRTC:
    # A chip RTC running at (1 + ppb / 1e9) times true time; `true` is moved by the test.
    def __init__(self, true, ppb, dev):
        self.true = true
        self.ppb = ppb
        self._true0 = true
        self._dev0 = dev
    def dev_unix(self):
        el = self.true - self._true0
        return self._dev0 + el + el * self.ppb // 1000000000
    def datetime(self, t=None):
        if t is None:
            days, sod = divmod(self.dev_unix(), 86400)
            y, mo, d = clock.civil_from_days(days)
            return (y, mo, d, (days + 3) % 7, sod // 3600, sod // 60 % 60, sod % 60, 0)
        self._dev0 = clock.days_from_civil(t[0], t[1], t[2]) * 86400 + t[4] * 3600 + t[5] * 60 + t[6]
        self._true0 = self.true

def files_of(d):
    out = {}
    for name in ('store_a.bin', 'store_b.bin'):
        try:
            with open(d + name, 'rb') as f:
                out[name] = binascii.hexlify(f.read()).decode()
        except OSError:
            out[name] = None
    return out

class Ctx:
    def __init__(self, d, rtc):
        self.dir = d
        self.rtc = rtc
        self.fw_version = '9.9.9-test'
        self.board_name = 'test'
        self.button = False
        self.button_none = 'none'
        self.events = []
        self.waits = []
        self.sent = []
        self.boot()
    def boot(self):
        # What the app does at power-up.
        self.store = Store(self.dir)
        self.clock = clock.Clock(self.rtc)
        proto.apply_drift(self.store, self.clock)
    def reset_gesture(self, wait_ms, hold_ms, report):
        self.waits.append([wait_ms, hold_ms])
        report('wait', 0, wait_ms // 1000)
        if self.button:
            report('hold', hold_ms // 1000, hold_ms // 1000)
            return 'held'
        return self.button_none
    def send(self, buf):
        self.sent.append(buf)
    def factory_reset(self, report):
        # What the app does: the store's wipe (flash), then 'reset' (RAM, REPL).
        self.store.wipe(lambda done, total: report('scrub', done, total))
        self.notify('reset')
    def notify(self, ev):
        # Record the event and whether any store file still exists at that moment.
        f = files_of(self.dir)
        self.events.append([ev, f['store_a.bin'] is not None or f['store_b.bin'] is not None])

def run_wire(dec, ctx, wire, chunk, now):
    replies = []
    def serve(r):
        while r is not None:
            replies.append(proto.handle(r, ctx))
            r = dec.feed(b'', now)
    if chunk == 1:
        for b in wire:
            serve(dec.feed(b, now))
    else:
        step = chunk if chunk > 0 else max(1, len(wire))
        for i in range(0, len(wire), step):
            serve(dec.feed(wire[i:i + step], now))
    return replies
"""

SCENARIO = r"""
rtc = FakeRTC(DATA['true'], DATA['ppb'], DATA['dev'])
ctx = Ctx('', rtc)
dec = proto.Decoder()
out = []
for step in DATA['steps']:
    if 'true' in step:
        rtc.true = step['true']
    if step.get('mark'):
        with open('kfwipe', 'wb'):  # a wipe cut short (store.MARK): what a power cut leaves
            pass
    if step.get('reboot'):
        ctx.boot()
        dec = proto.Decoder()
    ctx.button = step.get('button', False)
    ctx.button_none = step.get('let_go', 'none')
    ctx.events = []
    ctx.waits = []
    ctx.sent = []
    now = step.get('now', 0)
    replies = run_wire(dec, ctx, binascii.unhexlify(step.get('wire', '')), step.get('chunk', 0), now)
    if 'expire' in step:
        r = dec.expire(step['expire'])
        if r is not None:
            replies.append(proto.handle(r, ctx))
    s = ctx.store
    code = None
    if s.provisioned and s.mode == 'totp':
        code = otp.totp(s.seed, ctx.clock.unix(), s.period, s.digits, s.algorithm)
    out.append({
        'replies': [binascii.hexlify(r).decode() for r in replies],
        'sent': [binascii.hexlify(r).decode() for r in ctx.sent],
        'files': files_of(''), 'events': ctx.events, 'waits': ctx.waits,
        'time': None if ctx.clock.lost() else ctx.clock.unix(), 'raw': rtc.dev_unix(), 'code': code,
        'mem': [s.provisioned, s.locked, s.serial, s.mode, s.algorithm, s.digits, s.period, s.counter,
                s.drift_ppb, s.synced_at, binascii.hexlify(s.seed).decode()],
    })
emit(out)
"""


def run_device(steps, true=T0, ppb=0, dev=None):
    data = {"true": true, "ppb": ppb, "dev": true if dev is None else dev, "steps": steps}
    return run_mpy_json(HARNESS + SCENARIO, data, paths=[FIRMWARE])


def step(wire: bytes = b"", **kw) -> dict:
    return {"wire": wire.hex(), **kw}


def replies_of(result: dict) -> list[tuple[int, dict]]:
    """Decode a step's replies with the host decoder: each is exactly one good OK/ERROR frame."""
    out = []
    for hx in result["replies"]:
        got = frames.Decoder().feed(bytes.fromhex(hx))
        assert len(got) == 1 and got[0].error is None, got
        assert got[0].type in (frames.OK, frames.ERROR)
        out.append((got[0].type, frames.decode_payload(got[0])))
    return out


def one_reply(result: dict) -> tuple[int, dict]:
    got = replies_of(result)
    assert len(got) == 1, got
    return got[0]


def assert_error(result: dict, reason: str) -> dict:
    ftype, obj = one_reply(result)
    assert ftype == frames.ERROR, obj
    assert obj["reason"] == reason, obj
    assert obj["reason"] in frames.REASONS
    return obj


def info_req() -> bytes:
    return frames.encode_json(frames.INFO)


def provision_fields(seed=SEED20, **over) -> dict:
    f = {
        "seed": seed.hex() if isinstance(seed, bytes) else seed,
        "serial": SERIAL,
        "mode": "totp",
        "algorithm": "sha1",
        "digits": 6,
        "period": 30,
        "counter": 0,
    }
    f.update(over)
    return f


def secret_forms(seed: bytes) -> list[bytes]:
    b32 = base64.b32encode(seed)
    return [
        seed,
        seed.hex().encode(),
        seed.hex().upper().encode(),
        b32,
        b32.rstrip(b"="),
        b32.lower(),
        b32.rstrip(b"=").lower(),
    ]


def assert_no_secret(blob: bytes, seed: bytes) -> None:
    for form in secret_forms(seed):
        assert form not in blob, "seed material found in token output"


# ---------------------------------------------------------------------------------------------
# (a) the token: a full session


def test_session_info_provision_settime_lock_reset():
    seed = SEED20
    big = b'{"t":%d}' % (T0 + 60)
    big += b" " * (frames.MAX_PAYLOAD - len(big))  # the largest payload there is
    steps = [
        step(info_req()),  # 0
        step(frames.encode_json(frames.PROVISION, provision_fields(seed)), chunk=1),  # 1
        step(info_req()),  # 2
        step(frames.encode_json(frames.PROVISION, provision_fields(SEED32, algorithm="sha256"))),  # 3
        step(frames.encode_json(frames.SETTIME, {"t": T0}), true=T0),  # 4
        step(frames.encode_frame(frames.SETTIME, big), true=T0 + 60, chunk=7),  # 5
        step(frames.encode_json(frames.LOCK)),  # 6
        step(info_req()),  # 7
        step(frames.encode_json(frames.LOCK)),  # 8: already locked
        step(frames.encode_json(frames.RESET), button=False),  # 9
        step(info_req()),  # 10
        step(frames.encode_json(frames.RESET), button=True),  # 11
        step(info_req()),  # 12
        step(info_req(), reboot=True),  # 13
    ]
    res = run_device(steps, dev=T0 - 7)
    every_byte = b"".join(bytes.fromhex(h) for r in res for h in r["replies"])
    every_payload = b"".join(f.payload for f in frames.Decoder().feed(every_byte))
    assert_no_secret(every_byte + every_payload, seed)

    ftype, info0 = one_reply(res[0])
    assert ftype == frames.OK and info0["re"] == frames.INFO
    assert info0["provisioned"] is False and info0["locked"] is False and info0["serial"] == ""
    assert info0["fw"] == "9.9.9-test" and info0["board"] == "test" and info0["proto"] == 1
    assert res[0]["files"] == {"store_a.bin": None, "store_b.bin": None}

    ftype, prov = one_reply(res[1])
    assert ftype == frames.OK and prov["re"] == frames.PROVISION
    assert prov["kcv"] == host_otp.key_check_value(seed, "sha1")
    assert prov["kcv"] not in host_otp.HotpKey(seed).codes(0, 10_001)
    assert res[1]["events"] == [["provisioned", True]]
    assert res[1]["mem"][:8] == [True, False, SERIAL, "totp", "sha1", 6, 30, 0]

    _, info1 = one_reply(res[2])
    assert (info1["provisioned"], info1["locked"], info1["serial"], info1["mode"]) == (
        True,
        False,
        SERIAL,
        "totp",
    )
    assert (info1["algorithm"], info1["digits"], info1["period"]) == ("sha1", 6, 30)
    assert set(info1) == {
        "re",
        "proto",
        "fw",
        "board",
        "serial",
        "mode",
        "algorithm",
        "digits",
        "period",
        "counter",
        "provisioned",
        "locked",
        "time",
        "drift_ppb",
        "synced_at",
        "jumps",
        "faults",
    }
    assert info1["jumps"] == 0 and info1["faults"] == []

    assert_error(res[3], "provisioned")
    assert res[3]["files"] == res[2]["files"] and res[3]["mem"] == res[2]["mem"]

    _, sync1 = one_reply(res[4])
    assert sync1 == {
        "re": frames.SETTIME,
        "offset": -7,
        "elapsed": None,
        "drift_ppb": 0,
        "learned": False,
        "set": True,
        "jump": False,
        "jumps": 0,
    }
    assert res[4]["time"] == T0 and res[4]["mem"][9] == T0
    assert res[4]["code"] == int(host_otp.totp(seed, T0))

    ftype, sync2 = one_reply(res[5])  # the 501-byte payload is accepted
    assert ftype == frames.OK and sync2["offset"] == 0 and sync2["elapsed"] == 60 and not sync2["learned"]

    ftype, lock = one_reply(res[6])
    assert ftype == frames.OK and lock == {"re": frames.LOCK, "locked": True}
    assert res[6]["events"] == [["locked", True]] and res[6]["mem"][1] is True
    _, info2 = one_reply(res[7])
    assert info2["locked"] is True and info2["provisioned"] is True
    assert one_reply(res[8])[0] == frames.OK
    assert res[8]["files"] == res[7]["files"]  # no write for a token already locked

    assert_error(res[9], "presence")
    assert res[9]["waits"] == [[10000, 5000]]  # pressed within 10 s, held through 5 s
    assert [e for e, _ in res[9]["events"]] == ["reset-wait", "reset-refused"]
    assert res[9]["files"] == res[8]["files"] and res[9]["mem"] == res[8]["mem"]
    _, info3 = one_reply(res[10])
    assert info3["locked"] is True and info3["provisioned"] is True

    ftype, reset = one_reply(res[11])
    assert ftype == frames.OK and reset == {"re": frames.RESET, "reset": True, "scrubbed": True}
    # Progress went out while the request ran, each a PROGRESS frame answering RESET.
    sent = [frames.Decoder().feed(bytes.fromhex(h)) for h in res[11]["sent"]]
    assert all(len(f) == 1 and f[0].type == frames.PROGRESS and f[0].error is None for f in sent)
    steps = [frames.decode_payload(f[0]) for f in sent]
    assert steps[:2] == [
        {"re": frames.RESET, "step": "wait", "done": 0, "total": 10},
        {"re": frames.RESET, "step": "hold", "done": 5, "total": 5},
    ]
    # The wipe is durable before the app is told to reopen the REPL: no store file left then.
    assert res[11]["events"] == [["reset-wait", True], ["reset", False]]
    assert res[11]["files"] == {"store_a.bin": None, "store_b.bin": None}
    assert res[11]["mem"][:2] == [False, False] and res[11]["mem"][10] == ""
    for r in (res[12], res[13]):
        _, info4 = one_reply(r)
        assert info4["provisioned"] is False and info4["locked"] is False and info4["serial"] == ""


def test_a_wipe_cut_short_reads_locked_refuses_provision_and_a_reset_finishes_it():
    steps = [
        step(frames.encode_json(frames.PROVISION, provision_fields())),
        step(info_req(), mark=True, reboot=True),
        step(frames.encode_json(frames.PROVISION, provision_fields())),
        step(frames.encode_json(frames.RESET), button=True),
        step(info_req(), reboot=True),
    ]
    res = run_device(steps)
    _, info = one_reply(res[1])
    assert info["locked"] is True and info["provisioned"] is False and info["serial"] == ""
    assert res[1]["mem"][10] == ""  # no seed loaded
    assert assert_error(res[2], "storage")["text"].startswith("a factory reset did not complete")
    assert one_reply(res[3])[1] == {"re": frames.RESET, "reset": True, "scrubbed": True}
    _, info = one_reply(res[4])
    assert info["locked"] is False and info["provisioned"] is False


def test_reset_let_go_before_the_countdown_ends_changes_nothing():
    steps = [
        step(frames.encode_json(frames.PROVISION, provision_fields())),
        step(frames.encode_json(frames.LOCK)),
        step(frames.encode_json(frames.RESET), let_go="cancelled"),
    ]
    res = run_device(steps)
    err = assert_error(res[2], "cancelled")
    assert "nothing changed" in err["text"]
    assert [e for e, _ in res[2]["events"]] == ["reset-wait", "reset-cancelled"]
    assert res[2]["files"] == res[1]["files"] and res[2]["mem"] == res[1]["mem"]


def test_provision_hotp_sha256_8_digits_kcv():
    rec = provision_fields(SEED32, mode="hotp", algorithm="sha256", digits=8, period=60, counter=12345)
    res = run_device([step(frames.encode_json(frames.PROVISION, rec)), step(info_req())])
    _, prov = one_reply(res[0])
    assert prov["kcv"] == host_otp.key_check_value(SEED32, "sha256")
    assert prov["kcv"] != host_otp.key_check_value(SEED32, "sha1")
    _, info = one_reply(res[1])
    assert (info["mode"], info["algorithm"], info["digits"], info["period"], info["counter"]) == (
        "hotp",
        "sha256",
        8,
        60,
        12345,
    )
    assert res[0]["mem"][10] == SEED32.hex()


# ---------------------------------------------------------------------------------------------
# (a) bad frames: an error frame each, nothing changes, the token still answers


def _bad_provisions() -> list[tuple[dict, str]]:
    f = provision_fields
    bad_check = SERIAL[:-1] + str((int(SERIAL[-1]) + 1) % 10)
    cases = [
        f(seed=RNG.randbytes(15)),
        f(seed=RNG.randbytes(65)),
        f(seed=SEED20, algorithm="sha256"),
        f(seed=SEED20.hex()[:-1]),
        f(seed="zz" * 20),
        f(seed=1234),
        f(digits=5),
        f(digits=7),
        f(digits="6"),
        f(digits=True),
        f(digits=6.0),
        f(period=45),
        f(period=0),
        f(mode="motp"),
        f(algorithm="sha512"),
        f(counter=-1),
        f(counter=2**64 - 1),
        f(counter="0"),
        f(serial=bad_check),
        f(serial=SERIAL.lower()),
        f(serial=SERIAL + "0"),
        f(serial=SERIAL[:-1]),
        f(serial=7),
        {k: v for k, v in f().items() if k != "seed"},
        {**f(), "lock": True},
    ]
    return [(c, "field") for c in cases]


def _raw_frame_with_control_byte() -> bytes:
    good = frames.encode_json(frames.SETTIME, {"t": T0})
    return good[:8] + b"\x03" + good[8:]


def test_bad_frames_get_errors_and_change_nothing():
    seed = SEED20
    ok_settime = frames.encode_json(frames.SETTIME, {"t": T0})
    cases_unprov = _bad_provisions() + [
        (frames.encode_frame(frames.PROVISION, b"not json"), "payload"),
        (frames.encode_frame(frames.PROVISION, b"[1, 2]"), "payload"),
        (frames.encode_frame(frames.PROVISION, b'{"seed": "\xff\xfe"}'), "payload"),
        (frames.encode_frame(frames.PROVISION, b""), "payload"),
        (frames.encode_json(frames.LOCK), "unprovisioned"),
    ]
    cases_prov = [
        (frames.encode_raw(frames.INFO, b"", crc=0x12345678), "crc"),
        (frames.encode_raw(frames.SETTIME, b'{"t":%d}' % (T0 + 999), crc=0), "crc"),
        (frames.encode_raw(frames.INFO, b"a" * 502), "oversize"),
        (frames.encode_raw(frames.INFO, b"", length=0xFFFF), "oversize"),
        (frames.encode_frame(frames.INFO, b"", version=2), "version"),
        (frames.encode_frame(0x06), "unknown"),
        (frames.encode_frame(frames.OK, b"{}"), "unknown"),
        (frames.encode_frame(0x00), "unknown"),
        (_raw_frame_with_control_byte(), "framing"),
        (frames.MAGIC + b"\xfd\x21\xfd\x41", "framing"),  # FD 41 un-escapes to 'a', never escaped
        (frames.encode_frame(frames.INFO, b"{}"), "payload"),
        (frames.encode_frame(frames.LOCK, b" "), "payload"),
        (frames.encode_frame(frames.RESET, b"x"), "payload"),
        (frames.encode_json(frames.PROVISION, provision_fields(SEED32, algorithm="sha256")), "provisioned"),
        (frames.encode_json(frames.SETTIME, {"t": 1_704_067_199}), "field"),
        (frames.encode_json(frames.SETTIME, {"t": 4_102_444_800}), "field"),
        (frames.encode_json(frames.SETTIME, {"t": str(T0)}), "field"),
        (frames.encode_json(frames.SETTIME, {"t": T0 + 0.5}), "field"),
        (frames.encode_json(frames.SETTIME, {}), "field"),
        (frames.encode_json(frames.SETTIME, {"t": T0, "x": 1}), "field"),
        (frames.encode_frame(frames.SETTIME, b'{"t": 1750000000'), "payload"),
    ]
    steps = [step(info_req())]
    steps += [step(frames.encode_json(frames.PROVISION, c) if isinstance(c, dict) else c) for c, _ in cases_unprov]
    steps += [
        step(frames.encode_json(frames.PROVISION, provision_fields(seed))),
        step(ok_settime),
        step(info_req()),
    ]
    steps += [step(c) for c, _ in cases_prov]
    # Truncated: half a SETTIME, then silence past the timeout (the idle loop's expire()).
    steps += [step(ok_settime[:-3], now=5000, expire=5000 + frames.FRAME_TIMEOUT_MS + 1)]
    # Truncated, noticed when the next frame's bytes arrive late: error first, then the answer.
    steps += [step(ok_settime[:9], now=10_000), step(info_req(), now=11_500)]
    # Not yet stale: a frame split over two feeds 900 ms apart is fine.
    steps += [step(info_req()[:6], now=20_000), step(info_req()[6:], now=20_900)]
    steps += [step(info_req())]
    res = run_device(steps)

    base_unprov = res[0]
    for i, (case, reason) in enumerate(cases_unprov, start=1):
        obj = assert_error(res[i], reason)
        assert res[i]["files"] == base_unprov["files"] and res[i]["mem"] == base_unprov["mem"], case
        assert seed.hex() not in obj["text"] and res[i]["events"] == []
    k = len(cases_unprov) + 1
    assert one_reply(res[k])[0] == frames.OK and one_reply(res[k + 1])[0] == frames.OK
    base = res[k + 2]
    _, info_before = one_reply(base)
    for j, (case, reason) in enumerate(cases_prov, start=k + 3):
        assert_error(res[j], reason)
        assert res[j]["files"] == base["files"] and res[j]["mem"] == base["mem"], (reason, case)
        assert res[j]["time"] == base["time"]
    j = k + 3 + len(cases_prov)
    assert_error(res[j], "truncated")
    got = replies_of(res[j + 1]) + replies_of(res[j + 2])
    assert [(t, o.get("reason")) for t, o in got] == [(frames.ERROR, "truncated"), (frames.OK, None)]
    assert replies_of(res[j + 3]) == [] and one_reply(res[j + 4])[0] == frames.OK
    _, info_after = one_reply(res[j + 5])
    assert info_after == info_before
    assert all(r["files"] == base["files"] for r in res[k + 2 :])
    every = b"".join(bytes.fromhex(h) for r in res for h in r["replies"])
    assert_no_secret(every + b"".join(f.payload for f in frames.Decoder().feed(every)), seed)


def test_garbage_between_frames_and_any_chunking():
    repl_noise = b"MicroPython v1.29\r\n>>> \x03\x01raw REPL; CTRL-B to exit\r\n>\x04"
    stream = (
        repl_noise
        + b"\xfbKX"
        + b"\xfbK"
        + info_req()
        + bytes(range(0x00, 0xFB))
        + b"KF"
        + frames.encode_json(frames.SETTIME, {"t": T0})[:10]  # abandoned by the next frame's FB
        + info_req()
        + b"\xfb"
        + b"trailing \xfd garbage"
    )
    steps = [step(stream, chunk=c) for c in (0, 1, 2, 7, 64)]
    res = run_device(steps)
    for r in res:
        got = replies_of(r)
        assert [(t, o["re"]) for t, o in got] == [(frames.OK, frames.INFO)] * 2, got
        assert r["files"] == res[0]["files"]


# ---------------------------------------------------------------------------------------------
# (d) drift learning


def test_drift_learned_from_two_syncs_and_codes_stay_right_months_later():
    # 4.5 ppm: inside the DS3231M's +-5 ppm, and over three months (35 s) more than the 15 s
    # that T0 has left in its step, so an uncorrected clock shows the wrong code.
    seed = SEED20
    span = 90 * DAY
    prov = frames.encode_json(frames.PROVISION, provision_fields(seed))
    steps = [
        step(prov),  # 0
        step(frames.encode_json(frames.SETTIME, {"t": T0}), true=T0),  # 1: first sync
        step(true=T0 + span),  # 2: three months on, uncorrected
        step(frames.encode_json(frames.SETTIME, {"t": T0 + span}), true=T0 + span),  # 3: learns
        step(info_req(), true=T0 + 2 * span, reboot=True),  # 4: three months more, after a power cycle
        step(frames.encode_json(frames.SETTIME, {"t": T0 + 2 * span}), true=T0 + 2 * span),  # 5: refines
        step(frames.encode_json(frames.SETTIME, {"t": T0 + 2 * span + 3 * DAY}), true=T0 + 2 * span + 3 * DAY),
    ]
    res = run_device(steps, ppb=4_500, dev=T0 + 5)
    _, s1 = one_reply(res[1])
    assert s1["offset"] == 5 and not s1["learned"]
    raw_off = res[2]["time"] - (T0 + span)
    assert 34 <= raw_off <= 36  # 4.5 ppm of 90 days is 35 s
    assert res[2]["code"] != int(host_otp.totp(seed, T0 + span))  # uncorrected: the code is wrong

    _, s2 = one_reply(res[3])
    assert s2["learned"] and s2["elapsed"] == span and s2["offset"] == raw_off
    assert abs(s2["drift_ppb"] - 4_500) <= 200
    assert res[3]["mem"][8] == s2["drift_ppb"] and res[3]["mem"][9] == T0 + span

    # Three months without a sync, and a reboot in between: corrected time and code still right.
    _, info = one_reply(res[4])
    assert abs(info["time"] - (T0 + 2 * span)) <= 2 and info["drift_ppb"] == s2["drift_ppb"]
    assert abs(res[4]["raw"] - (T0 + 2 * span)) >= 30
    assert res[4]["code"] == int(host_otp.totp(seed, T0 + 2 * span))

    _, s3 = one_reply(res[5])  # the residual offset refines the estimate
    assert s3["learned"] and abs(s3["offset"]) <= 2 and abs(s3["drift_ppb"] - 4_500) <= 200
    _, s4 = one_reply(res[6])  # three days are too short to learn from (1 s would be 3.9 ppm)
    assert not s4["learned"] and s4["drift_ppb"] == s3["drift_ppb"] and s4["elapsed"] == 3 * DAY


def test_drift_beyond_the_oscillator_bound_is_not_learned():
    # 40 ppm is no DS3231: a sync that says so is taken (unlocked token) but teaches nothing.
    span = 30 * DAY
    steps = [
        step(frames.encode_json(frames.PROVISION, provision_fields())),
        step(frames.encode_json(frames.SETTIME, {"t": T0}), true=T0),
        step(frames.encode_json(frames.SETTIME, {"t": T0 + span}), true=T0 + span),
    ]
    res = run_device(steps, ppb=40_000, dev=T0)
    _, s = one_reply(res[2])
    assert s["offset"] >= 100 and s["set"] and not s["learned"] and s["drift_ppb"] == 0


LOCK_AFTER_SYNC = [
    step(frames.encode_json(frames.PROVISION, provision_fields())),
    step(frames.encode_json(frames.SETTIME, {"t": T0}), true=T0),
    step(frames.encode_json(frames.LOCK)),
]


def jump_limit(elapsed: int) -> int:
    """docs/protocol.md section 5, written out: ALLOW_S * min(elapsed, 1 day) / 1 day + ceil(elapsed * 5 ppm)."""
    elapsed = max(elapsed, 0)
    return 5 * min(elapsed, DAY) // DAY + -(-elapsed * 5 // 1_000_000)


@pytest.mark.parametrize("elapsed", [3600, DAY // 2, DAY, 7 * DAY, 30 * DAY, 365 * DAY])
def test_locked_token_takes_corrections_up_to_the_limit_and_refuses_one_more(elapsed):
    # The token's own clock is exact here, so a host `off` seconds behind it makes raw - t = off,
    # at elapsed = t - synced_at = elapsed - off by the host's clock.
    def ok(off):
        return abs(off) <= jump_limit(elapsed - off)

    hi = max(o for o in range(0, 200) if ok(o))
    lo = min(o for o in range(-200, 1) if ok(o))
    cases = [(hi, True), (hi + 1, False), (lo, True), (lo - 1, False)]
    for off, accepted in cases:
        assert ok(off) is accepted
        r = run_device(
            LOCK_AFTER_SYNC
            + [step(frames.encode_json(frames.SETTIME, {"t": T0 + elapsed - off}), true=T0 + elapsed, reboot=True)]
        )
        last = r[-1]
        if accepted:
            ftype, obj = one_reply(last)
            assert ftype == frames.OK, (elapsed, off, obj)
            assert obj["offset"] == off and obj["set"] is (abs(off) > 1)
            assert not obj["jump"] and obj["jumps"] == 0
        else:
            obj = assert_error(last, "jump")
            assert last["mem"] == r[-2]["mem"] and last["files"] == r[-2]["files"]  # nothing changed


def test_locked_token_counts_a_jump_only_when_its_clock_was_lost_or_never_synced():
    steps = [
        step(frames.encode_json(frames.PROVISION, provision_fields())),
        step(frames.encode_json(frames.LOCK)),  # locked before any sync
        step(frames.encode_json(frames.SETTIME, {"t": T0 + 3600})),  # nothing to hold it against
        step(info_req()),
        step(frames.encode_json(frames.SETTIME, {"t": T0 + 7200})),  # now it has: refused
        step(info_req(), reboot=True),
    ]
    res = run_device(steps, dev=T0)
    _, sync = one_reply(res[2])
    assert sync["set"] and sync["jump"] and sync["jumps"] == 1 and sync["offset"] == -3600
    assert one_reply(res[3])[1]["jumps"] == 1
    assert_error(res[4], "jump")
    assert one_reply(res[5])[1]["jumps"] == 1  # durable


def test_time_mode_is_refused_on_a_clock_unfit_for_it():
    # A board whose own clock is an RC oscillator (ESP32 in deep sleep) and no DS3231.
    code = (
        HARNESS
        + r"""
ctx = Ctx('', FakeRTC(DATA['t'], 0, DATA['t']))
ctx.clock.max_ppm = None
out = []
for wire in DATA['wires']:
    out.append(binascii.hexlify(run_wire(proto.Decoder(), ctx, binascii.unhexlify(wire), 0, 0)[0]).decode())
out.append(ctx.store.provisioned)
emit(out)
"""
    )
    wires = [
        frames.encode_json(frames.PROVISION, provision_fields()).hex(),
        frames.encode_json(frames.PROVISION, provision_fields(mode="hotp")).hex(),
    ]
    out = run_mpy_json(code, {"t": T0, "wires": wires}, paths=[FIRMWARE])
    refused = assert_error({"replies": [out[0]]}, "rtc")
    assert "DS3231" in refused["text"]
    assert one_reply({"replies": [out[1]]})[0] == frames.OK and out[2] is True  # event mode needs no clock


def test_settime_on_a_lost_clock_reports_no_offset_and_learns_nothing():
    # The fake RTC shows 1970 (chip RTC never set since power-up): not trustworthy.
    steps = [step(info_req()), step(frames.encode_json(frames.SETTIME, {"t": T0})), step(info_req())]
    res = run_device(steps, dev=0)
    _, info = one_reply(res[0])
    assert info["time"] is None
    _, sync = one_reply(res[1])
    assert sync["offset"] is None and not sync["learned"]
    assert one_reply(res[2])[1]["time"] == T0


# ---------------------------------------------------------------------------------------------
# (b) host codec


@given(st.integers(0, 255), st.binary(max_size=frames.MAX_PAYLOAD), st.integers(1, 40))
@settings(max_examples=200, deadline=None)
def test_host_codec_round_trip(ftype, payload, chunk):
    wire = frames.encode_frame(ftype, payload)
    assert wire.count(frames.MAGIC[0]) == 1 and wire.startswith(frames.MAGIC)
    assert not any(b < 0x20 or b == 0x7F for b in wire), "a control byte on the wire"
    assert len(wire) <= 3 + 2 * (frames.MAX_FRAME - 3)
    dec = frames.Decoder()
    got = []
    for i in range(0, len(wire), chunk):
        got += dec.feed(wire[i : i + chunk])
    assert got == [frames.Frame(ftype, payload)]


def test_host_codec_rejects_what_it_cannot_send():
    with pytest.raises(frames.FrameError):
        frames.encode_frame(frames.INFO, b"x" * (frames.MAX_PAYLOAD + 1))
    with pytest.raises(frames.FrameError):
        frames.encode_frame(256)
    assert "seed" not in repr(frames.Frame(2, b'{"seed":"00"}'))


# ---------------------------------------------------------------------------------------------
# (b) fuzz: one long-lived MicroPython process runs every example on two tokens

FUZZ_SERVER = r"""
import json
os.mkdir('u')
os.mkdir('p')
rtc = FakeRTC(1750000000, 0, 1750000000)
tok_u = Ctx('u/', rtc)
tok_p = Ctx('p/', rtc)
setup = json.loads(sys.stdin.readline())
tok_p.store.provision(binascii.unhexlify(setup['seed']), setup['serial'], 'totp', 'sha1', 6, 30, 0)
tok_p.store.lock()
def state(ctx):
    s = ctx.store
    return [files_of(ctx.dir), s.provisioned, s.locked, s.serial, s.counter, s.drift_ppb, s.synced_at,
            s.seed, ctx.clock.unix()]
print('ready')
while True:
    line = sys.stdin.readline()
    if not line:
        break
    ex = json.loads(line)
    wire = binascii.unhexlify(ex['wire'])
    res = {}
    for name, ctx in (('u', tok_u), ('p', tok_p)):
        before = state(ctx)
        try:
            dec = proto.Decoder()
            replies = run_wire(dec, ctx, wire, ex['chunk'], 0)
            r = dec.expire(5000)
            if r is not None:
                replies.append(proto.handle(r, ctx))
            res[name] = {'replies': [binascii.hexlify(x).decode() for x in replies],
                         'same': state(ctx) == before, 'crash': None}
        except Exception as e:
            res[name] = {'replies': [], 'same': False, 'crash': repr(e)}
    print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def fuzz_device():
    with tempfile.TemporaryDirectory(prefix="mpy-fuzz-") as tmp:
        script = Path(tmp) / "fuzz.py"
        script.write_text(HARNESS + FUZZ_SERVER)
        env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(FIRMWARE), ".frozen"]))
        proc = subprocess.Popen(
            [micropython_binary(), str(script)],
            cwd=tmp,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        proc.stdin.write(json.dumps({"seed": SEED20.hex(), "serial": SERIAL}) + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()

        def run(wire: bytes, chunk: int) -> dict:
            proc.stdin.write(json.dumps({"wire": wire.hex(), "chunk": chunk}) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
            assert line, "micropython died: " + proc.stderr.read()
            return json.loads(line)

        yield run
        proc.stdin.close()
        proc.wait(timeout=10)


_FIELD_NAMES = st.sampled_from(["seed", "serial", "mode", "algorithm", "digits", "period", "counter", "t", "x"])
_VALUES = st.one_of(
    st.integers(-(2**70), 2**70),
    st.text(max_size=24),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["totp", "sha1", SERIAL]),
)
_JSON = st.dictionaries(_FIELD_NAMES, _VALUES, max_size=8).map(lambda d: json.dumps(d, separators=(",", ":")).encode())
# Every type but SETTIME (a *valid* SETTIME legitimately changes the clock).
_TYPES = st.integers(0, 255).filter(lambda t: t != frames.SETTIME)
_FRAMES = st.builds(frames.encode_frame, _TYPES, st.one_of(st.just(b""), st.binary(max_size=60), _JSON))


@st.composite
def _mutated(draw):
    wire = bytearray(draw(_FRAMES))
    how = draw(st.sampled_from(["flip", "cut", "insert", "length"]))
    i = draw(st.integers(0, len(wire) - 1))
    if how == "flip":
        wire[i] ^= 1 << draw(st.integers(0, 7))
    elif how == "cut":
        del wire[i:]
    elif how == "insert":
        wire.insert(i, draw(st.integers(0, 255)))
    else:
        return frames.encode_raw(draw(_TYPES), b"", length=draw(st.integers(0, 0xFFFF)))
    return bytes(wire)


_STREAMS = st.lists(st.one_of(st.binary(max_size=40), _FRAMES, _mutated()), max_size=6).map(b"".join)


@given(_STREAMS, st.sampled_from([0, 1, 3, 17, 64]))
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_device_decoder_never_raises_never_changes_state(fuzz_device, wire, chunk):
    res = fuzz_device(wire, chunk)
    host = frames.Decoder()
    expected = host.feed(wire)
    if host.busy:
        expected.append(frames.Frame(0, b"", "truncated"))
    for name in ("u", "p"):
        r = res[name]
        assert r["crash"] is None, r["crash"]
        assert r["same"], f"state changed on token {name}"
        got = []
        for hx in r["replies"]:
            fr = frames.Decoder().feed(bytes.fromhex(hx))
            assert len(fr) == 1 and fr[0].error is None and fr[0].type in (frames.OK, frames.ERROR)
            got.append((fr[0].type, frames.decode_payload(fr[0])))
        # One reply per frame event, and the device's decoder agrees with the host's.
        assert len(got) == len(expected)
        for (ftype, obj), want in zip(got, expected, strict=True):
            if want.error is not None:
                assert ftype == frames.ERROR and obj["reason"] == want.error
            else:
                assert obj["re"] == want.type
                if ftype == frames.ERROR:
                    assert obj["reason"] in frames.REASONS - frames.FRAME_REASONS
                else:  # only requests that change nothing may succeed here
                    assert want.type in (frames.INFO, frames.LOCK) and (want.type == frames.INFO or name == "p")
        assert_no_secret(b"".join(bytes.fromhex(h) for h in r["replies"]), SEED20)


# ---------------------------------------------------------------------------------------------
# (c) the client against a fake transport


class FakeTransport:
    """Answers each request frame with whatever ``answer(frame)`` returns, served a few bytes per read."""

    def __init__(self, answer, piece=5):
        self.answer = answer
        self.piece = piece
        self.sent: list[frames.Frame] = []
        self.pending = b""
        self.resets = 0
        self.closed = False

    def write(self, data):
        for frame in frames.Decoder().feed(data):
            self.sent.append(frame)
            self.pending += self.answer(frame)

    def read(self, max_bytes):
        n = min(self.piece, max_bytes)
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def reset_input_buffer(self):
        self.resets += 1

    def close(self):
        self.closed = True


def ok(re, **fields):
    return frames.encode_json(frames.OK, {"re": re, **fields})


def err(re, reason, text="no"):
    return frames.encode_json(frames.ERROR, {"re": re, "reason": reason, "text": text})


INFO_FIELDS = {
    "proto": 1,
    "fw": "1.0",
    "board": "sim",
    "serial": SERIAL,
    "mode": "totp",
    "algorithm": "sha1",
    "digits": 6,
    "period": 30,
    "counter": 0,
    "provisioned": True,
    "locked": True,
    "time": T0,
    "drift_ppb": 40123,
    "synced_at": T0 - DAY,
}


def record(seed=SEED20, algorithm="sha1"):
    return TokenRecord(serial=SERIAL, mode="totp", algorithm=algorithm, digits=6, secret=seed)


def test_client_info_skips_noise_and_stale_replies():
    def answer(frame):
        noise = b"boot noise\r\n" + frames.encode_raw(frames.OK, b"{}", crc=1)  # a damaged frame
        stale = ok(frames.RESET, reset=True)  # a late answer to an earlier request
        return noise + stale + ok(frames.INFO, **INFO_FIELDS)

    t = FakeTransport(answer)
    with TokenClient(t) as client:
        info = client.info()
    assert t.closed and t.resets == 1
    assert t.sent == [frames.Frame(frames.INFO, b"")]
    assert info.serial == SERIAL and info.locked and info.provisioned and info.board == "sim"
    assert info.drift_ppm == pytest.approx(40.123) and info.time == T0


def test_client_provision_checks_kcv():
    seen = {}

    def answer(frame):
        seen.update(json.loads(frame.payload))
        return ok(frames.PROVISION, kcv=host_otp.key_check_value(SEED32, "sha256"))

    client = TokenClient(FakeTransport(answer))
    assert client.provision(record(SEED32, "sha256")) == host_otp.key_check_value(SEED32, "sha256")
    assert seen == {
        "seed": SEED32.hex(),
        "serial": SERIAL,
        "mode": "totp",
        "algorithm": "sha256",
        "digits": 6,
        "period": 30,
        "counter": 0,
    }


def test_client_kcv_mismatch_leaks_nothing():
    wrong = host_otp.key_check_value(SEED32, "sha1")
    client = TokenClient(FakeTransport(lambda f: ok(frames.PROVISION, kcv=wrong)))
    with pytest.raises(KcvMismatch) as exc:
        client.provision(record())
    text = (str(exc.value) + repr(exc.value)).encode()
    assert_no_secret(text, SEED20)
    assert host_otp.key_check_value(SEED20).encode() not in text and wrong.encode() not in text


@pytest.mark.parametrize("reason", ["provisioned", "field", "presence", "unprovisioned"])
def test_client_refused_carries_reason(reason):
    client = TokenClient(FakeTransport(lambda f: err(f.type, reason, "because")))
    with pytest.raises(Refused) as exc:
        client.provision(record())
    assert exc.value.reason == reason and exc.value.text == "because"
    assert "PROVISION" in str(exc.value)
    assert_no_secret(str(exc.value).encode(), SEED20)


def test_client_frame_rejected_and_no_answer():
    client = TokenClient(FakeTransport(lambda f: err(0, "crc", "CRC mismatch")))
    with pytest.raises(FrameRejected) as exc:
        client.info()
    assert exc.value.reason == "crc" and isinstance(exc.value, ProtocolError)

    silent = TokenClient(FakeTransport(lambda f: b""), timeout=0.05)
    with pytest.raises(ProtocolError, match="no answer to INFO"):
        silent.info()
    garbled = TokenClient(FakeTransport(lambda f: frames.encode_raw(frames.OK, b"{}", crc=7)), timeout=0.05)
    with pytest.raises(ProtocolError, match="1 damaged"):
        garbled.lock()
    missing = TokenClient(FakeTransport(lambda f: ok(frames.INFO, serial=SERIAL)))
    with pytest.raises(ProtocolError, match="missing fields"):
        missing.info()


def test_client_reads_jumps_faults_and_the_jump_refusal():
    # New firmware: INFO with jumps and faults, SETTIME with set/jump/jumps; a refused jump is Refused.
    replies = {
        frames.INFO: ok(frames.INFO, **INFO_FIELDS, jumps=2, faults=["oled"]),
        frames.SETTIME: ok(
            frames.SETTIME, offset=None, elapsed=DAY, drift_ppb=0, learned=False, set=True, jump=True, jumps=3
        ),
    }
    client = TokenClient(FakeTransport(lambda f: replies[f.type]))
    info = client.info()
    assert info.jumps == 2 and info.faults == ("oled",)
    assert client.settime(now=T0) == TimeSync(
        offset=None, elapsed=DAY, drift_ppb=0, learned=False, set=True, jump=True, jumps=3
    )
    refusal = err(frames.SETTIME, "jump", "clock jump refused: 86 s off, at most 6 s may be corrected now")
    with pytest.raises(Refused) as exc:
        TokenClient(FakeTransport(lambda f: refusal)).settime(now=T0)
    assert exc.value.reason == "jump" and "jump" in frames.REASONS and "rtc" in frames.REASONS
    # Older firmware: neither field in INFO, none of the three in SETTIME.
    old = TokenClient(FakeTransport(lambda f: ok(frames.INFO, **INFO_FIELDS)))
    assert old.info().jumps == 0 and old.info().faults == ()
    old = TokenClient(FakeTransport(lambda f: ok(frames.SETTIME, offset=1, elapsed=5, drift_ppb=0, learned=False)))
    assert old.settime(now=T0) == TimeSync(offset=1, elapsed=5, drift_ppb=0, learned=False)


def test_protocol_md_states_the_bound_the_firmware_uses():
    # docs/protocol.md section 5 is the one definition: its constants are the firmware's.
    doc = (FIRMWARE.parent / "docs" / "protocol.md").read_text()
    proto_src = (FIRMWARE / "proto.py").read_text()
    clock_src = (FIRMWARE / "clock.py").read_text()
    assert "**A = 5 s** (`proto.ALLOW_S`)" in doc and "ALLOW_S = const(5)" in proto_src
    assert "**5 ppm** (`clock.DS3231_PPM`)" in doc and "DS3231_PPM = 5" in clock_src
    assert "`elapsed ≥ 604,800 s`" in doc and "LEARN_MIN_S = const(604800)" in proto_src


def test_client_settime_lock_reset():
    def answer(frame):
        if frame.type == frames.SETTIME:
            t = json.loads(frame.payload)["t"]
            return ok(frames.SETTIME, offset=t - (T0 + 2), elapsed=None, drift_ppb=0, learned=False)
        return ok(frame.type, locked=True) if frame.type == frames.LOCK else ok(frame.type, reset=True, scrubbed=True)

    t = FakeTransport(answer)
    client = TokenClient(t)
    assert client.settime(now=T0 + 2.4) == TimeSync(offset=0, elapsed=None, drift_ppb=0, learned=False)
    assert json.loads(t.sent[0].payload) == {"t": T0 + 2}
    client.lock()
    client.reset()
    assert [f.type for f in t.sent] == [frames.SETTIME, frames.LOCK, frames.RESET]
    assert t.sent[1].payload == b"" and t.sent[2].payload == b""


class SlowToken:
    """A token answering RESET the way a 4 MB ESP32 does: a report a second while it waits for
    the button and counts down, then one per 4 KiB block zeroed, 40 s of scrub in all. Time is
    virtual: each read() is one second of the token's work (``clock`` is what the client sees)."""

    def __init__(self, scrub_s=40, gap_s=1.0, final=None):
        self.now = 1000.0
        self.gap = gap_s
        self.sent: list[frames.Frame] = []
        self.queue: list[bytes] = []
        self.resets = 0
        self.closed = False
        self.scrub_s = scrub_s
        self.final = final if final is not None else ok(frames.RESET, reset=True, scrubbed=True)

    def clock(self) -> float:
        return self.now

    def _progress(self, step, done, total):
        return frames.encode_json(frames.PROGRESS, {"re": frames.RESET, "step": step, "done": done, "total": total})

    def write(self, data):
        for frame in frames.Decoder().feed(data):
            self.sent.append(frame)
            q = [self._progress("wait", s, 10) for s in range(3)]
            q += [self._progress("hold", s, 5) for s in range(6)]
            total = self.scrub_s * 4096
            q += [self._progress("scrub", i * 4096, total) for i in range(self.scrub_s + 1)]
            self.queue = q + [self.final]

    def read(self, max_bytes):
        self.now += self.gap  # the token works for a while between two frames
        return self.queue.pop(0) if self.queue else b""

    def reset_input_buffer(self):
        self.resets += 1

    def close(self):
        self.closed = True


def test_client_reset_waits_on_progress_past_the_old_15_s_and_returns_at_scrub_complete(monkeypatch):
    # Issue 10 point 5: the token waits for the button, counts down, then zero-fills 40 s of
    # flash; the client follows each report (a bound per step, not one for the whole reset).
    from keyfob.device import client as client_mod

    tok = SlowToken()
    monkeypatch.setattr(client_mod.time, "monotonic", tok.clock)
    seen = []
    with TokenClient(tok) as client:
        client.reset(progress=seen.append)
    assert tok.now - 1000 > 45  # far past the 15 s the host used to give up after
    assert [p.step for p in seen] == ["wait"] * 3 + ["hold"] * 6 + ["scrub"] * 41
    assert seen[-1].done == seen[-1].total == 40 * 4096
    assert tok.queue == []  # returned at the final reply, not before

    # A token gone silent mid-scrub (unplugged): a clear error after one step's bound, not a hang.
    mute = SlowToken()
    mute.final = b""
    monkeypatch.setattr(client_mod.time, "monotonic", mute.clock)
    with pytest.raises(ProtocolError, match="sent nothing for"):
        TokenClient(mute, reset_timeout=5).reset()
    assert 5 <= mute.now - 1000 - 50 <= 7  # gave up one bound after the last report

    # A reply that does not say the scrub completed is not "done".
    old = SlowToken(final=ok(frames.RESET, reset=True))
    monkeypatch.setattr(client_mod.time, "monotonic", old.clock)
    with pytest.raises(ProtocolError, match="scrub completed"):
        TokenClient(old).reset()


@pytest.mark.parametrize("reason", ["presence", "cancelled", "storage"])
def test_client_reset_refusals_carry_their_reason(reason):
    client = TokenClient(FakeTransport(lambda f: err(f.type, reason, "why")))
    with pytest.raises(Refused) as exc:
        client.reset()
    assert exc.value.reason == reason


# ---------------------------------------------------------------------------------------------
# (c) end to end: TokenClient over a pipe to MicroPython running the app's idle-loop recipe

DEVICE_LOOP = r"""
import select
class PipeCtx(Ctx):
    def reset_gesture(self, wait_ms, hold_ms, report):
        # The "button" is a file the test creates.
        report('wait', 0, wait_ms // 1000)
        try:
            os.stat('button')
        except OSError:
            return 'none'
        report('hold', hold_ms // 1000, hold_ms // 1000)
        return 'held'
    def send(self, buf):
        sys.stdout.buffer.write(buf)
rtc = FakeRTC(1750000000, 0, 1750000000)
ctx = PipeCtx('', rtc)
dec = proto.Decoder()
poll = select.poll()
poll.register(sys.stdin, select.POLLIN)
inp = sys.stdin.buffer
out = sys.stdout.buffer
while True:
    if poll.poll(200 if dec.busy() else 1000):
        b = inp.read(1)
        if not b:
            break
        req = dec.feed(b[0])
    else:
        req = dec.expire()
    while req is not None:
        out.write(proto.handle(req, ctx))
        req = dec.feed(b'')
"""


class PipeTransport:
    def __init__(self, proc):
        self.proc = proc
        self.fd = proc.stdout.fileno()

    def write(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def read(self, max_bytes):
        ready, _, _ = select.select([self.fd], [], [], 0.05)
        return os.read(self.fd, max_bytes) if ready else b""

    def reset_input_buffer(self):
        while select.select([self.fd], [], [], 0)[0]:
            if not os.read(self.fd, 4096):
                break

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def test_client_end_to_end_over_a_pipe():
    with tempfile.TemporaryDirectory(prefix="mpy-e2e-") as tmp:
        script = Path(tmp) / "device.py"
        script.write_text(HARNESS + DEVICE_LOOP)
        env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(FIRMWARE), ".frozen"]))
        proc = subprocess.Popen(
            [micropython_binary(), str(script)],
            cwd=tmp,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        seed = os.urandom(20)
        with TokenClient(PipeTransport(proc), timeout=10, reset_timeout=20) as client:
            assert not client.info().provisioned
            kcv = client.provision(record(seed))
            assert kcv == host_otp.key_check_value(seed)
            sync = client.settime(now=1_750_000_003)
            assert sync.offset is not None and sync.elapsed is None and not sync.learned
            client.lock()
            info = client.info()
            assert info.locked and info.provisioned and info.serial == SERIAL
            with pytest.raises(Refused) as exc:
                client.provision(record(seed))
            assert exc.value.reason == "provisioned"
            with pytest.raises(Refused) as exc:
                client.reset()
            assert exc.value.reason == "presence"
            assert client.info().provisioned
            (Path(tmp) / "button").touch()
            client.reset()
            info = client.info()
            assert not info.provisioned and not info.locked
            assert not (Path(tmp) / "store_a.bin").exists() and not (Path(tmp) / "store_b.bin").exists()
        assert proc.returncode == 0, proc.stderr.read()


def test_protocol_constants_agree_with_the_firmware():
    text = (FIRMWARE / "proto.py").read_text()
    for name in (
        "INFO",
        "PROVISION",
        "SETTIME",
        "LOCK",
        "RESET",
        "OK",
        "ERROR",
        "MAX_FRAME",
        "MAX_PAYLOAD",
        "FRAME_TIMEOUT_MS",
    ):
        value = getattr(frames, name)
        assert f"{name} = const({value:#04x})" in text or f"{name} = const({value})" in text, name
    assert "MAGIC = b'\\xfbKF'" in text
    assert struct.calcsize(">3sBBH") == frames.HEADER
    assert binascii.crc32(b"123456789") == 0xCBF43926  # the CRC-32 both sides use
