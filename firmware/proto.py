# proto.py: the provisioning protocol on the token (docs/protocol.md).
#
# Frames: magic FB 4B 46, version, type, 2-byte length, JSON payload, CRC32
# of everything before it. Every byte after the magic that is a C0 control
# byte, DEL, FB or FD is sent as FD, b ^ 0x20, so no Ctrl-C or raw REPL byte
# is ever on the wire and FB only ever starts a frame.
#
# Decoder.feed() takes one byte (int) or a buffer and returns a Request (or
# None). handle(request, ctx) checks everything first, then changes the
# store in one durable write, and returns the reply frame as bytes. It never
# raises and never puts the seed or a code into a reply.

import binascii
import json
import time

from micropython import const

import otp
import store

VERSION = const(1)

INFO = const(0x01)
PROVISION = const(0x02)
SETTIME = const(0x03)
LOCK = const(0x04)
RESET = const(0x05)
OK = const(0x80)
ERROR = const(0x81)
PROGRESS = const(0x82)

MAGIC = b'\xfbKF'
_M0 = const(0xFB)
_ESC = const(0xFD)
_HDR = const(7)  # magic, version, type, length
MAX_FRAME = const(512)
MAX_PAYLOAD = const(501)  # MAX_FRAME - header - CRC
FRAME_TIMEOUT_MS = const(1000)
RESET_WAIT_MS = const(10000)
RESET_HOLD_MS = const(5000)

# SETTIME limits and drift learning (docs/protocol.md section 5).
T_MIN = 1704067200  # 2024-01-01
T_MAX = 4102444800  # 2100-01-01
LEARN_MIN_S = const(604800)  # 7 days: 1 s of offset is 1.7 ppm
ALLOW_S = const(5)  # what a host's clock may be off, granted over a day (no creeping)
_DAY = const(86400)

_SCAN = const(0)
_MAGIC = const(1)
_BODY = const(2)
_REST_MAX = const(1100)  # a little more than the longest frame on the wire

_DAMM = (
    b'\x00\x03\x01\x07\x05\x09\x08\x06\x04\x02',
    b'\x07\x00\x09\x02\x01\x05\x04\x08\x06\x03',
    b'\x04\x02\x00\x06\x08\x07\x01\x03\x05\x09',
    b'\x01\x07\x05\x00\x09\x08\x03\x04\x02\x06',
    b'\x06\x01\x02\x03\x00\x04\x05\x09\x07\x08',
    b'\x03\x06\x07\x04\x02\x00\x09\x05\x08\x01',
    b'\x05\x08\x06\x09\x07\x02\x00\x01\x03\x04',
    b'\x08\x09\x04\x05\x03\x06\x02\x00\x01\x07',
    b'\x09\x04\x03\x08\x06\x01\x07\x02\x00\x05',
    b'\x02\x05\x08\x01\x04\x03\x06\x07\x09\x00',
)

_PROVISION_FIELDS = ('seed', 'serial', 'mode', 'algorithm', 'digits', 'period', 'counter')
# What provisioning takes besides store.MODES and store.ALGORITHMS (the host's table is
# keyfob.params.KEYFOB: tests/test_params_firmware.py holds the two together).
DIGITS = (6, 8)
PERIODS = (30, 60)


def _escaped(b):
    return b < 0x20 or b == 0x7F or b == _M0 or b == _ESC


class Request:
    # type: the request type byte (0 if unknown); payload: memoryview of the
    # decoder's buffer (valid until the next feed) or None; error: a reason
    # code when the frame itself was bad.

    def __init__(self, rtype, payload=None, error=None):
        self.type = rtype
        self.payload = payload
        self.error = error


class Decoder:

    def __init__(self):
        self._buf = bytearray(MAX_FRAME)
        self._mv = memoryview(self._buf)
        self._one = bytearray(1)
        self._state = _SCAN
        self._n = 0
        self._need = 0
        self._esc = False
        self._t0 = 0
        self._rest = None

    def busy(self):
        return self._state != _SCAN

    def expire(self, now=None):
        # A frame started more than FRAME_TIMEOUT_MS ago: drop it, answer 'truncated'.
        if self._state == _SCAN:
            return None
        if now is None:
            now = time.ticks_ms()
        if time.ticks_diff(now, self._t0) <= FRAME_TIMEOUT_MS:
            return None
        return self._fail('truncated')

    def feed(self, data, now=None):
        if now is None:
            now = time.ticks_ms()
        if type(data) is int:
            self._one[0] = data
            data = self._one
        r = self.expire(now)
        if r is not None:
            self._keep(data, 0)
            return r
        rest = self._rest
        if rest is not None:
            self._rest = None
            data = rest + bytes(data) if len(data) else rest
        for i in range(len(data)):
            r = self._byte(data[i], now)
            if r is not None:
                self._keep(data, i + 1)
                return r
        return None

    def _keep(self, data, i):
        # Bytes after a finished frame wait for the next feed() call.
        n = len(data) - i
        if n <= 0:
            return
        if n > _REST_MAX:
            i = len(data) - _REST_MAX
        tail = bytes(data[i:])
        self._rest = tail if self._rest is None else self._rest + tail
        if len(self._rest) > _REST_MAX:
            self._rest = self._rest[len(self._rest) - _REST_MAX:]

    def _fail(self, reason):
        rtype = self._buf[4] if self._n > 4 else 0
        self._state = _SCAN
        self._n = 0
        return Request(rtype, None, reason)

    def _byte(self, b, now):
        buf = self._buf
        if b == _M0:
            # A frame start, always (FB is escaped everywhere else); a frame
            # in progress was abandoned by its sender.
            buf[0] = b
            self._n = 1
            self._state = _MAGIC
            self._esc = False
            self._t0 = now
            return None
        st = self._state
        if st == _SCAN:
            return None
        n = self._n
        if st == _MAGIC:
            if b == MAGIC[n]:
                buf[n] = b
                self._n = n + 1
                if n == 2:
                    self._state = _BODY
            else:
                self._state = _SCAN
            return None
        if self._esc:
            self._esc = False
            b ^= 0x20
            if not _escaped(b):
                return self._fail('framing')
        elif b == _ESC:
            self._esc = True
            return None
        elif b < 0x20 or b == 0x7F:
            return self._fail('framing')
        buf[n] = b
        n += 1
        self._n = n
        if n == 4:
            if b != VERSION:
                return self._fail('version')
        elif n == _HDR:
            length = buf[5] << 8 | b
            if length > MAX_PAYLOAD:
                return self._fail('oversize')
            self._need = _HDR + length + 4
        elif n > _HDR and n == self._need:
            end = n - 4
            crc = buf[end] << 24 | buf[end + 1] << 16 | buf[end + 2] << 8 | buf[end + 3]
            if crc != binascii.crc32(self._mv[:end]):
                return self._fail('crc')
            self._state = _SCAN
            self._n = 0
            return Request(buf[4], self._mv[_HDR:end])
        return None


# --- encoding -------------------------------------------------------------

def encode(rtype, payload=b''):
    # One frame, escaped, as bytes.
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError('payload too long')
    hdr = bytearray(_HDR)
    hdr[0:3] = MAGIC
    hdr[3] = VERSION
    hdr[4] = rtype
    hdr[5] = n >> 8
    hdr[6] = n & 0xFF
    crc = binascii.crc32(payload, binascii.crc32(hdr))
    tail = bytearray(4)
    for i in range(4):
        tail[i] = (crc >> (24 - 8 * i)) & 0xFF
    out = bytearray(MAGIC)
    for part in (memoryview(hdr)[3:], payload, tail):
        for b in part:
            if _escaped(b):
                out.append(_ESC)
                out.append(b ^ 0x20)
            else:
                out.append(b)
    return bytes(out)


def _ok(rtype, fields):
    fields['re'] = rtype
    return encode(OK, json.dumps(fields).encode())


def _err(rtype, reason, text):
    return encode(ERROR, json.dumps({'re': rtype, 'reason': reason, 'text': text}).encode())


class _Refuse(Exception):
    # (reason, text): ends a request with an ERROR reply, nothing changed.
    pass


# --- field checks -----------------------------------------------------------

def valid_serial(s):
    # 'KF' + 9 digits, the last the Damm check digit of the first 8.
    if type(s) is not str or len(s) != 11 or s[:2] != 'KF':
        return False
    interim = 0
    for i in range(2, 11):
        c = ord(s[i]) - 48
        if c < 0 or c > 9:
            return False
        interim = _DAMM[interim][c]
    return interim == 0


def _fields(req, names):
    # The payload as a dict with exactly `names` as keys.
    try:
        obj = json.loads(req.payload)
    except Exception:  # noqa: any parse failure (syntax, UTF-8, memory) is a bad payload
        raise _Refuse('payload', 'payload is not JSON')
    if type(obj) is not dict:
        raise _Refuse('payload', 'payload is not a JSON object')
    for k in obj:
        if k not in names:
            raise _Refuse('field', 'unknown field')
    for k in names:
        if k not in obj:
            raise _Refuse('field', 'missing field: ' + k)
    return obj


def _empty(req):
    if len(req.payload):
        raise _Refuse('payload', 'this request takes no payload')


def _int(obj, name, lo, hi):
    # lo <= value <= hi
    v = obj[name]
    if type(v) is not int or v < lo or v > hi:
        raise _Refuse('field', name + ' out of range')
    return v


def _choice(obj, name, options):
    v = obj[name]
    if type(v) is not str or v not in options:
        raise _Refuse('field', name + ' must be one of ' + '/'.join(options))
    return v


# --- requests ---------------------------------------------------------------

def apply_drift(store, clock):
    # The store keeps drift in ppb, + = token clock fast; the clock wants the
    # correction in ppm, + = add time (docs/protocol.md section 5).
    clock.drift_ppm = -store.drift_ppb / 1000
    clock.synced_at = store.synced_at if store.synced_at else None


def _clock_now(clock):
    try:
        if clock.lost():
            return None
        return clock.unix()
    except Exception:  # noqa: a clock that cannot be read is treated as lost
        return None


def _info(req, ctx):
    _empty(req)
    s = ctx.store
    return _ok(INFO, {
        'proto': VERSION, 'fw': ctx.fw_version, 'board': ctx.board_name,
        'serial': s.serial, 'mode': s.mode, 'algorithm': s.algorithm,
        'digits': s.digits, 'period': s.period, 'counter': s.counter,
        'provisioned': s.provisioned, 'locked': s.locked,
        'time': _clock_now(ctx.clock), 'drift_ppb': s.drift_ppb, 'synced_at': s.synced_at,
        'jumps': s.jumps, 'faults': _faults(ctx),
    })


def _faults(ctx):
    # The app's list, and a DS3231 that stopped answering while read.
    f = list(getattr(ctx, 'faults', ()))
    if getattr(ctx.clock, 'failed', False) and 'ds3231' not in f:
        f.append('ds3231')
    return f


def _provision(req, ctx):
    obj = _fields(req, _PROVISION_FIELDS)
    s = ctx.store
    if s.provisioned:
        raise _Refuse('provisioned', 'token already provisioned: factory reset first')
    if s.wiping:
        # A wipe that failed midway: old records may still be on the flash.
        raise _Refuse('storage', 'a factory reset did not complete: reset again first')
    mode = _choice(obj, 'mode', store.MODES)
    if mode == 'totp' and ctx.clock.max_ppm is None:
        raise _Refuse('rtc', 'time mode needs a DS3231 on this board: its own clock drifts too much')
    alg = _choice(obj, 'algorithm', store.ALGORITHMS)
    digits = obj['digits']
    if type(digits) is not int or digits not in DIGITS:
        raise _Refuse('field', 'digits must be 6 or 8')
    period = obj['period']
    if type(period) is not int or period not in PERIODS:
        raise _Refuse('field', 'period must be 30 or 60')
    counter = _int(obj, 'counter', 0, store.COUNTER_LAST - 1)
    serial = obj['serial']
    if not valid_serial(serial):
        raise _Refuse('field', 'serial must be KF + 9 digits with a valid check digit')
    hexseed = obj['seed']
    lo = 32 if alg == 'sha256' else 16
    if type(hexseed) is not str or len(hexseed) < 2 * lo or len(hexseed) > 128 or len(hexseed) & 1:
        raise _Refuse('field', 'seed must be %d..64 bytes in hex' % lo)
    try:
        seed = binascii.unhexlify(hexseed)
    except Exception:  # noqa: the text never echoes the value
        raise _Refuse('field', 'seed must be hex')
    s.provision(seed, serial, mode, alg, digits, period, counter)
    apply_drift(s, ctx.clock)
    kcv = otp.key_check_value(seed, alg)
    ctx.notify('provisioned')
    return _ok(PROVISION, {'kcv': kcv})


def jump_limit(elapsed, max_ppm):
    # The most a locked token's clock may be corrected `elapsed` s after the
    # last sync (docs/protocol.md 5): what its oscillator can drift, rounded
    # up, plus ALLOW_S for the host's error granted over a day (so quick
    # repeated syncs cannot add allowances up).
    elapsed = max(elapsed, 0)
    return ALLOW_S * min(elapsed, _DAY) // _DAY + (elapsed * max_ppm + 999999) // 1000000


def _settime(req, ctx):
    t = _int(_fields(req, ('t',)), 't', T_MIN, T_MAX - 1)
    s, clock = ctx.store, ctx.clock
    apply_drift(s, clock)
    raw = offset = None
    try:
        if not clock.lost():
            raw, offset = clock.raw_and_unix()
            offset -= t
    except Exception:  # noqa: a clock that cannot be read is treated as lost
        raw = offset = None
    drift = s.drift_ppb
    elapsed = t - s.synced_at if s.synced_at else None
    ppm = clock.max_ppm
    known = offset is not None and elapsed is not None and ppm is not None
    learned = False
    put = True  # the clock is set
    if s.locked and known:
        if -1 <= offset <= 1:
            put = False  # in sync to the second: nothing moves, so 1 s nudges add up to nothing
        elif abs(raw - t) > jump_limit(elapsed, ppm):
            raise _Refuse('jump', 'clock jump refused: %d s off, at most %d s now'
                          % (raw - t, jump_limit(elapsed, ppm)))
    jump = s.locked and not known  # nothing to hold the time against: set, and counted
    if put:
        if known and elapsed >= LEARN_MIN_S:
            # round(offset * 1e9 / elapsed) in integers, kept within the bound
            q = (2 * offset * 1000000000 + elapsed) // (2 * elapsed)
            if abs(drift + q) <= ppm * 1000:
                drift += q
                learned = True
        try:
            clock.set_unix(t)
        except Exception:  # noqa: the I2C or RTC write failed
            raise _Refuse('clock', 'the clock could not be set')
        s.set_drift(drift, t, 1 if jump else 0)
        apply_drift(s, clock)
        ctx.notify('time')
    return _ok(SETTIME, {'offset': offset, 'elapsed': elapsed, 'drift_ppb': drift, 'learned': learned,
                         'set': put, 'jump': jump, 'jumps': s.jumps})


def _lock(req, ctx):
    _empty(req)
    s = ctx.store
    if not s.provisioned:
        raise _Refuse('unprovisioned', 'token has no seed: provision it first')
    if not s.locked:
        s.lock()
    ctx.notify('locked')
    return _ok(LOCK, {'locked': True})


def _reset(req, ctx):
    _empty(req)
    send = ctx.send

    def report(step, done, total):
        # A PROGRESS frame at least once a second: the host waits on these,
        # with a bound per step, not on the whole reset (docs/protocol.md).
        send(encode(PROGRESS, json.dumps({'re': RESET, 'step': step, 'done': done, 'total': total}).encode()))

    ctx.notify('reset-wait')
    # Pressed within RESET_WAIT_MS, then held through a RESET_HOLD_MS
    # countdown: no everyday press (a code, the 2 s serial screen) does that.
    got = ctx.reset_gesture(RESET_WAIT_MS, RESET_HOLD_MS, report)
    if got == 'cancelled':
        ctx.notify('reset-cancelled')
        raise _Refuse('cancelled', 'button let go before the 5 s countdown ended: nothing changed')
    if got != 'held':
        ctx.notify('reset-refused')
        raise _Refuse('presence', 'button not pressed within 10 s: nothing changed')
    # The app wipes and scrubs the flash (durable intent first: a cut from
    # here on boots into finishing it, locked until done), then the RAM; only
    # then does it reopen the REPL.
    try:
        ctx.factory_reset(report)
    except OSError:
        raise _Refuse('storage', 'flash failed during the wipe: the token stays locked, reset again')
    apply_drift(ctx.store, ctx.clock)
    return _ok(RESET, {'reset': True, 'scrubbed': True})


_HANDLERS = {INFO: _info, PROVISION: _provision, SETTIME: _settime, LOCK: _lock, RESET: _reset}

_FRAME_TEXT = {
    'crc': 'CRC mismatch',
    'truncated': 'frame not complete within 1 s',
    'oversize': 'payload longer than 501 bytes',
    'version': 'unsupported protocol version',
    'framing': 'bad escape or control byte in frame',
}


# Made once, so an error can be answered even when the heap is exhausted.
_LAST_RESORT = _err(0, 'internal', 'out of memory')


def _wipe(mv):
    if mv is not None:
        for i in range(len(mv)):
            mv[i] = 0


def handle(req, ctx):
    # -> reply frame (bytes). Never raises.
    try:
        return _dispatch(req, ctx)
    except Exception:  # noqa: even building the error reply failed (memory)
        return _LAST_RESORT
    finally:
        _wipe(req.payload)


def _dispatch(req, ctx):
    rtype = req.type
    if req.error is not None:
        return _err(rtype, req.error, _FRAME_TEXT.get(req.error, 'bad frame'))
    h = _HANDLERS.get(rtype)
    if h is None:
        return _err(rtype, 'unknown', 'unknown request type')
    try:
        return h(req, ctx)
    except _Refuse as e:
        return _err(rtype, e.args[0], e.args[1])
    except OSError:
        _reload(ctx)
        return _err(rtype, 'storage', 'flash write failed: nothing changed')
    except Exception:  # noqa: never let a request stop the token
        _reload(ctx)
        return _err(rtype, 'internal', 'internal error: nothing changed')


def _reload(ctx):
    # Memory back in line with the flash after a failed change.
    try:
        ctx.store.load()
        apply_drift(ctx.store, ctx.clock)
    except Exception:  # noqa: keep answering
        pass
