"""firmware/store.py and the virtual flash (boards/sim/hw/flash.py) under the real MicroPython unix port.

Every store test runs on a LittleFS v2 image mounted through the file-backed block device, as on the
virtual token. The power-cut tests kill the micropython process in the middle of a flash write
(KEYFOB_SIM_CUT_AFTER_WRITES) and check in a fresh process what survived.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import random
import secrets
import struct
import subprocess
import sys

import pytest
from mpy import FIRMWARE, SIM_HW, MpyError, run_mpy, run_mpy_json

PATHS = [FIRMWARE, SIM_HW]
BLOCK_COUNT = 32  # a small image: LittleFS reuses and compacts its blocks often
KILLED = -9  # subprocess return code of a SIGKILLed process


def mpy_json(code: str, data=None, **kw):
    return run_mpy_json(code, data, paths=PATHS, **kw)


def mpy_run(code: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run ``code``; return (returncode, stdout) whether it exited or was killed."""
    try:
        return 0, run_mpy(code, paths=PATHS, env=env)
    except MpyError as exc:
        if exc.returncode is None:
            raise
        return exc.returncode, exc.stdout


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the virtual flash --------------------------------------------------------------------------------

CUT_SCRIPT = """\
import flash
bd = flash.FileBlockDev(%(img)r, block_size=512, block_count=4)
try:
    for b in range(3):
        bd.writeblocks(b, bytes([0x10 + b]) * 512, 0)
        print('wrote', b)
finally:
    print('finally ran')
"""


def test_flash_cut_writes_a_prefix_and_kills_the_process_under_micropython(tmp_path):
    img = tmp_path / "cut.img"
    rc, out = mpy_run(
        CUT_SCRIPT % {"img": str(img)},
        env={"KEYFOB_SIM_CUT_AFTER_WRITES": "2", "KEYFOB_SIM_CUT_BYTES": "100"},
    )
    assert rc == KILLED
    assert out.split("\n")[:2] == ["wrote 0", "wrote 1"]
    assert "wrote 2" not in out and "finally ran" not in out  # no unwinding: a hard stop
    data = img.read_bytes()
    assert len(data) == 4 * 512  # created at full size
    assert data[:512] == b"\x10" * 512 and data[512:1024] == b"\x11" * 512
    assert data[1024:1124] == b"\x12" * 100  # the torn write: its prefix only
    assert data[1124:] == b"\xff" * (2048 - 1124)  # rest still erased


def test_flash_under_cpython_reads_writes_erases_and_cuts_half(tmp_path):
    sys.path.insert(0, str(SIM_HW))
    try:
        import flash
    finally:
        sys.path.remove(str(SIM_HW))
    img = tmp_path / "cp.img"
    bd = flash.FileBlockDev(str(img), block_size=256, block_count=8, cut_after_writes=None)
    assert bd.ioctl(4, 0) == 8 and bd.ioctl(5, 0) == 256 and bd.ioctl(1, 0) == 0
    assert bd.writeblocks(3, b"\xab" * 16, 100) == 0
    buf = bytearray(256)
    assert bd.readblocks(3, buf) == 0
    assert buf[100:116] == b"\xab" * 16 and buf[:100] == b"\xff" * 100
    assert bd.readblocks(3, memoryview(buf)[:8], 100) == 0 and buf[:8] == b"\xab" * 8
    assert bd.ioctl(6, 3) == 0
    assert bd.readblocks(3, buf) == 0 and buf == b"\xff" * 256
    assert bd.writeblocks(8, b"x", 0) != 0 and bd.readblocks(7, bytearray(2), 255) != 0  # out of range
    bd.close()
    # A second device on the same image sees the data; the cut at the 2nd write stores half of it.
    code = (
        f"import sys; sys.path.insert(0, {str(SIM_HW)!r}); import flash\n"
        f"bd = flash.FileBlockDev({str(img)!r}, block_size=256, cut_after_writes=1)\n"
        "bd.writeblocks(0, b'\\x01' * 256)\nprint('first', flush=True)\n"
        "try:\n    bd.writeblocks(1, b'\\x02' * 200, 10)\nfinally:\n    print('finally ran')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 137 and proc.stdout == "first\n"
    data = img.read_bytes()
    assert len(data) == 8 * 256
    assert data[:256] == b"\x01" * 256
    assert data[256 + 10 : 256 + 110] == b"\x02" * 100 and data[256 + 110 : 256 + 210] == b"\xff" * 100


MOUNT_SCRIPT = """\
import os, flash
bd = flash.mount(DATA['img'], '/flash', block_count=DATA['blocks'])
seen = sorted(os.listdir('/flash'))
with open('/flash/hello.txt', 'w') as f:
    f.write('hi')
emit({'created': bd.created, 'reformatted': bd.reformatted, 'seen': seen,
      'blocks': bd.ioctl(4, 0), 'writes': bd.writes})
"""


def test_mount_formats_blank_image_keeps_files_and_reformats_garbage(tmp_path):
    img = tmp_path / "m.img"
    first = mpy_json(MOUNT_SCRIPT, {"img": str(img), "blocks": BLOCK_COUNT})
    assert first["created"] and not first["reformatted"] and first["seen"] == []
    assert img.stat().st_size == BLOCK_COUNT * 4096
    # block_count None: taken from the existing image's size
    again = mpy_json(MOUNT_SCRIPT, {"img": str(img), "blocks": None})
    assert not again["created"] and not again["reformatted"]
    assert again["seen"] == ["hello.txt"] and again["blocks"] == BLOCK_COUNT
    img.write_bytes(secrets.token_bytes(BLOCK_COUNT * 4096))  # no LittleFS superblock anywhere
    bad = mpy_json(MOUNT_SCRIPT, {"img": str(img), "blocks": None})
    assert bad["reformatted"] and bad["seen"] == []


# --- the store ----------------------------------------------------------------------------------------

ROUND_TRIP = """\
import os, gc, flash, store
from binascii import unhexlify, hexlify
bd = flash.mount(DATA['img'], '/flash', block_count=DATA['blocks'])
s = store.Store('/flash')
out = {'before': [s.provisioned, s.seed == b'', s.counter]}
if DATA['provision']:
    s.provision(unhexlify(DATA['seed']), DATA['serial'], mode='hotp', algorithm='sha256',
                digits=8, period=60, counter=DATA['counter'])
    out['reserved'] = [s.reserve_next_counter() for _ in range(3)]
    s.set_drift(-2500, 1767225600)
    s.lock()
    gc.collect()
    a = gc.mem_alloc()
    out['reserved'].append(s.reserve_next_counter())
    out['alloc'] = gc.mem_alloc() - a
    out['files'] = sorted(os.listdir('/flash'))
t = store.Store('/flash')
out['loaded'] = {'provisioned': t.provisioned, 'locked': t.locked, 'mode': t.mode, 'algorithm': t.algorithm,
                 'digits': t.digits, 'period': t.period, 'counter': t.counter, 'drift_ppb': t.drift_ppb,
                 'synced_at': t.synced_at, 'serial': t.serial, 'seq': t.seq}
out['seed'] = hexlify(t.seed).decode()
t.set_drift(1.25, 1767225700)
t.unlock()
u = store.Store('/flash')
out['after'] = [u.drift_ppb, u.synced_at, u.locked, u.counter]
emit(out)
"""


def test_provision_load_round_trip_across_processes(tmp_path):
    img = tmp_path / "rt.img"
    seed = secrets.token_bytes(32)
    data = {
        "img": str(img),
        "blocks": BLOCK_COUNT,
        "provision": True,
        "seed": seed.hex(),
        "serial": "KF000123454",
        "counter": 41,
    }
    # A small chip's heap, with the firmware loaded as a chip loads it: compiled by mpy-cross
    # (keyfob.build), not parsed from source in that heap.
    from keyfob import build

    built = tmp_path / "mpy"
    built.mkdir()
    build.compile_file(FIRMWARE / "store.py", built / "store.mpy")
    out = run_mpy_json(ROUND_TRIP, data, paths=[built, FIRMWARE, SIM_HW], heapsize="48K")
    assert out["before"] == [False, True, 0]
    assert out["reserved"] == [41, 42, 43, 44]
    assert out["files"] == ["store_a.bin", "store_b.bin"]
    # The press path allocates little: LittleFS's own file object and cache dominate.
    assert out["alloc"] <= 1024
    loaded = out["loaded"]
    assert hmac.compare_digest(bytes.fromhex(out["seed"]), seed)
    assert loaded == {
        "provisioned": True,
        "locked": True,
        "mode": "hotp",
        "algorithm": "sha256",
        "digits": 8,
        "period": 60,
        "counter": 45,
        "drift_ppb": -2500,
        "synced_at": 1767225600,
        "serial": "KF000123454",
        "seq": loaded["seq"],
    }
    assert out["after"] == [1250, 1767225700, False, 45]
    # A fresh process (a power cycle) finds the same state on the image.
    again = mpy_json(ROUND_TRIP, dict(data, provision=False))
    assert again["before"][0] is True
    assert hmac.compare_digest(bytes.fromhex(again["seed"]), seed)
    assert again["loaded"]["counter"] == 45 and again["loaded"]["locked"] is False
    assert again["loaded"]["drift_ppb"] == 1250 and again["loaded"]["seq"] > loaded["seq"]


CORRUPT = """\
import os, flash, store
bd = flash.mount(DATA['img'], '/flash', block_count=DATA['blocks'])
A = '/flash/store_a.bin'
B = '/flash/store_b.bin'
REC = store.REC_SIZE

def state(s):
    return [s.provisioned, s.counter, s.seq, s.serial, s.seed == SEED]

def fresh(counter):
    for p in (A, B):
        try:
            os.remove(p)
        except OSError:
            pass
    s = store.Store('/flash')
    s.provision(SEED, 'KF000123454', counter=counter)
    for _ in range(3):
        s.reserve_next_counter()
    return s                     # seq 4 is the newest record, next counter 103

def newest(s):
    return (A, B)[s._slot], (A, B)[1 - s._slot]

def flip(path, pos):
    with open(path, 'rb') as f:
        b = bytearray(f.read())
    b[pos] ^= 0x40
    with open(path, 'wb') as f:
        f.write(b)

def cut(path, n):
    with open(path, 'rb') as f:
        b = f.read()
    with open(path, 'wb') as f:
        f.write(b[:n])

SEED = b'\\x11' * 20
res = {}
s = fresh(100)
res['clean'] = state(store.Store('/flash'))
new, old = newest(s)

flip(new, 9)                      # a bit in the counter of the newest record
t = store.Store('/flash')
res['newest_corrupt'] = state(t)
res['next_after_fallback'] = t.reserve_next_counter()
res['after_fallback_write'] = state(store.Store('/flash'))

s = fresh(100); new, old = newest(s)
flip(old, 40)                     # the older record's seed
res['older_corrupt'] = state(store.Store('/flash'))

s = fresh(100); new, old = newest(s)
cut(new, REC // 2)                # a torn record (as a non-COW filesystem could leave it)
res['newest_torn'] = state(store.Store('/flash'))

s = fresh(100); new, old = newest(s)
os.remove(new)
res['newest_missing'] = state(store.Store('/flash'))

s = fresh(100); new, old = newest(s)
flip(new, 0)                      # magic
flip(old, REC - 1)                # CRC
t = store.Store('/flash')
res['both_corrupt'] = state(t)
res['both_corrupt_load'] = t.load()
t.provision(SEED, 'KF000000018', counter=7)   # still usable: reprovision over the garbage
res['reprovisioned'] = state(store.Store('/flash'))

s = fresh(100); new, old = newest(s)
with open(new, 'wb') as f:
    f.write(os.urandom(REC))
with open(old, 'wb') as f:
    f.write(b'')
res['garbage_and_empty'] = state(store.Store('/flash'))
emit(res)
"""


def test_corrupt_records_fall_back_and_never_raise(tmp_path):
    res = mpy_json(CORRUPT, {"img": str(tmp_path / "c.img"), "blocks": BLOCK_COUNT})
    good = [True, 103, 4, "KF000123454", True]  # provision = seq 1, three reservations
    assert res["clean"] == [True, 103, 4, "KF000123454", True]
    assert res["newest_corrupt"] == [True, 102, 3, "KF000123454", True]
    assert res["next_after_fallback"] == 102
    # the fallback's next record overwrites the corrupt file and outranks both
    assert res["after_fallback_write"] == [True, 103, 4, "KF000123454", True]
    assert res["older_corrupt"] == good
    assert res["newest_torn"] == [True, 102, 3, "KF000123454", True]
    assert res["newest_missing"] == [True, 102, 3, "KF000123454", True]
    assert res["both_corrupt"] == [False, 0, 0, "", False]
    assert res["both_corrupt_load"] is False
    assert res["reprovisioned"] == [True, 7, 1, "KF000000018", True]
    assert res["garbage_and_empty"] == [False, 0, 0, "", False]


def test_store_refuses_bad_fields_without_leaking_the_seed(tmp_path):
    code = """\
import flash, store
bd = flash.mount(DATA['img'], '/flash', block_count=DATA['blocks'])
s = store.Store('/flash')
errs = []
seed = b'SECRETSEEDSECRETSEED'
for kw in ({'mode': 'motp'}, {'algorithm': 'md5'}, {'digits': 5}, {'digits': 9}, {'period': 0},
           {'serial': 'X' * 17}, {'seed': b'short'}, {'seed': b'x' * 65}, {'counter': -1}):
    args = {'seed': seed, 'serial': 'KF000123454'}
    args.update(kw)
    try:
        s.provision(**args)
        errs.append('accepted')
    except ValueError as e:
        errs.append(str(e))
try:
    s.reserve_next_counter()
    errs.append('reserved')
except ValueError as e:
    errs.append(str(e))
emit({'errs': errs, 'provisioned': store.Store('/flash').provisioned})
"""
    res = mpy_json(code, {"img": str(tmp_path / "v.img"), "blocks": BLOCK_COUNT})
    assert len(res["errs"]) == 10
    assert "accepted" not in res["errs"] and "reserved" not in res["errs"]
    assert not any("SECRET" in e for e in res["errs"])
    assert res["provisioned"] is False


# --- power cuts ---------------------------------------------------------------------------------------

# How each run mounts the image. LittleFS (the boards' filesystem) replaces a file's content atomically
# at close; FAT does not, so on FAT a cut can leave a torn or empty record file and the store's own
# A/B + seq + CRC scheme is what keeps the state.
MOUNTS = {
    "lfs2": "bd = flash.mount(%(img)r, '/flash', block_count=32)\n",
    "fat": (
        "import vfs\n"
        "bd = flash.FileBlockDev(%(img)r, block_size=512, block_count=256)\n"
        "if bd.created:\n    vfs.VfsFat.mkfs(bd)\n"
        "vfs.mount(vfs.VfsFat(bd), '/flash')\nbd.reformatted = False\n"
    ),
}

WORKER = """\
import flash, store, hashlib, binascii
from binascii import unhexlify
%(mount)s
s = store.Store('/flash')
if %(provision)r:
    s.provision(unhexlify(%(seed)r), 'KF000123454', counter=1000)

def intact(path):
    try:
        with open(path, 'rb') as f:
            b = f.read()
    except OSError:
        return 0
    return int(len(b) == store.REC_SIZE and binascii.crc32(b[:-4]) == int.from_bytes(b[-4:], 'little'))

h = binascii.hexlify(hashlib.sha256(s.seed).digest()).decode()
print('LOADED %%d %%d %%d %%s %%s' %% (bd.reformatted, s.provisioned, s.counter, s.serial or '-', h))
print('INTACT %%d %%d' %% (intact('/flash/store_a.bin'), intact('/flash/store_b.bin')))
for _ in range(%(limit)d):
    c = s.reserve_next_counter()
    print('SHOWN %%d' %% c)
print('DONE')
"""


def parse_run(out: str):
    loaded = None
    shown = []
    for line in out.splitlines():
        parts = line.split()
        if parts[:1] == ["LOADED"]:
            loaded = {
                "reformatted": int(parts[1]),
                "provisioned": int(parts[2]),
                "counter": int(parts[3]),
                "serial": parts[4],
                "seed_sha256": parts[5],
            }
        elif parts[:1] == ["SHOWN"]:
            shown.append(int(parts[1]))
        elif parts[:1] == ["INTACT"] and loaded is not None:
            loaded["intact"] = int(parts[1]) + int(parts[2])
    return loaded, shown, "DONE" in out.splitlines()


@pytest.mark.parametrize("fs", ["lfs2", "fat"])
def test_power_cuts_during_reservations_never_repeat_a_counter(tmp_path, fs):
    img = tmp_path / "cut.img"
    seed = secrets.token_bytes(20)
    rnd = random.Random(20240521)
    script = {"img": str(img), "seed": seed.hex()}
    script["mount"] = MOUNTS[fs] % script
    rc, out = mpy_run(WORKER % dict(script, provision=True, limit=0))
    assert rc == 0 and parse_run(out)[0]["counter"] == 1000
    base = 1000  # the stored next counter, as loaded at the start of each run
    all_shown: list[int] = []
    cuts = skips = torn = 0
    prev_shown: list[int] = []
    runs = 0
    while True:
        final = cuts >= 50
        env = None
        if not final:
            env = {"KEYFOB_SIM_CUT_AFTER_WRITES": str(rnd.randrange(0, 30))}
            cut_bytes = rnd.choice([None, None, "0", "1", str(rnd.randrange(2, 4096))])
            if cut_bytes is not None:
                env["KEYFOB_SIM_CUT_BYTES"] = cut_bytes
        rc, out = mpy_run(WORKER % dict(script, provision=False, limit=0 if final else 200), env=env)
        runs += 1
        loaded, shown, done = parse_run(out)
        # The image always mounts and the store always loads, with the same token in it.
        assert loaded is not None, out
        assert loaded["reformatted"] == 0 and loaded["provisioned"] == 1, loaded
        assert loaded["serial"] == "KF000123454"
        assert hmac.compare_digest(loaded["seed_sha256"], sha256_hex(seed))
        # Every code shown in the previous run is used up; at most one value was skipped.
        low = base + len(prev_shown)
        assert low <= loaded["counter"] <= low + 1, (base, prev_shown, loaded["counter"])
        skips += loaded["counter"] - low
        torn += loaded["intact"] < 2
        if final:
            assert rc == 0 and done
            break
        # Codes shown in this run: consecutive from the stored counter.
        assert shown == list(range(loaded["counter"], loaded["counter"] + len(shown)))
        assert not set(shown) & set(all_shown)
        all_shown += shown
        if rc == KILLED and not done:
            cuts += 1
        else:
            assert rc == 0 and done, out
        base, prev_shown = loaded["counter"], shown
    assert cuts == 50
    assert len(all_shown) > 50  # the cuts hit at many points, not only the first write
    assert 0 < skips <= cuts  # some cuts landed after the record was complete, before the print
    if fs == "fat":
        assert torn > 0  # FAT did leave torn/empty record files, and the other record carried the state


# A small filesystem: a wipe zeroes all free space, and every one of its operations is cut.
WIPE_MOUNT = "bd = flash.mount(%(img)r, '/flash', block_count=8)\n"

WIPE_WORKER = """\
import flash, store, os
from binascii import unhexlify
%(mount)s
os.chdir('/flash')
s = store.Store()                 # as on the token: the records in their own directory
print('LOADED %%d %%d %%d %%d %%d' %% (s.provisioned, s.seed == unhexlify(%(seed)r), s.counter, s.locked, s.wiping))
if %(n)d < 0:
    if s.wiping:
        s.wipe()                  # what the app's start-up does with a wipe cut short
    print('FINISHED', len(os.listdir('/flash')))
else:
    s.provision(unhexlify(%(seed)r), 'KF000123454', counter=5)
    s.reserve_next_counter()
    s.reserve_next_counter()      # both records now hold the token: counters 6 (older) and 7 (newest)
    s.lock()
    bd.cut_after_ops = bd.ops + %(n)d
    s.wipe()
    print('WIPED', len(os.listdir('/flash')), s.locked, s.wiping)
"""


def _seed_windows(image: bytes, seed: bytes) -> int:
    return sum(seed[i : i + 8] in image for i in range(len(seed) - 7))


def test_power_cut_during_wipe_reads_locked_until_the_scrub_is_complete(tmp_path):
    """A cut at every flash operation (write or erase) of a wipe: the next load is the old token
    untouched, or `wiping` -- locked, no seed loaded -- and finishing that wipe leaves no 8-byte
    window of the seed anywhere in the image. Never an empty, open store over old records.
    LittleFS only: the records' own directory, removed by the wipe, is what frees the metadata
    log; that is LittleFS's layout (every port's filesystem), not FAT's."""
    img = tmp_path / "wipe.img"
    seed = secrets.token_bytes(20)
    script = {"img": str(img), "seed": seed.hex()}
    script["mount"] = WIPE_MOUNT % script
    outcomes = []
    n = 0
    while True:
        rc, out = mpy_run(WIPE_WORKER % dict(script, n=n))
        if rc == 0:
            assert out.splitlines()[-1] == "WIPED 0 False False", out
            break
        assert rc == KILLED, out
        rc, out = mpy_run(WIPE_WORKER % dict(script, n=-1))
        assert rc == 0, out
        loaded = tuple(map(int, out.splitlines()[0].split()[1:]))
        # Never an older record (that would hand out counter 6 again), never open and empty.
        assert loaded in ((1, 1, 7, 1, 0), (0, 0, 0, 1, 1)), (n, loaded)
        assert out.splitlines()[-1] == ("FINISHED 0" if loaded[4] else "FINISHED 1"), (n, out)
        if loaded[4]:
            windows = _seed_windows(img.read_bytes(), seed)  # a count: a failure must not print the seed
            assert windows == 0, n
        outcomes.append(loaded[4])
        n += 1
    windows = _seed_windows(img.read_bytes(), seed)
    assert windows == 0
    rc, out = mpy_run(WIPE_WORKER % dict(script, n=-1))
    assert out.splitlines()[0] == "LOADED 0 0 0 0 0"  # the completed wipe left nothing behind
    assert True in outcomes and False in outcomes  # cuts before and after the wipe's mark
    assert n > 20  # the scrub's blocks too, not only the records


WIPE_AND_TOP = """\
import flash, store
from binascii import unhexlify
bd = flash.mount(DATA['img'], '/flash', block_count=DATA['blocks'])
seed = unhexlify(DATA['seed'])
s = store.Store('/flash')
s.provision(seed, 'KF000123459', counter=DATA['top'] - 1)
out = {'last': s.reserve_next_counter()}
try:
    s.reserve_next_counter()
    out['past_top'] = 'handed out'
except OSError as e:
    out['past_top'] = e.errno
t = store.Store('/flash')  # the record on the flash: the counter did not wrap to 0
out['reloaded'] = t.counter
try:
    t.provision(seed, 'KF000123459', counter=DATA['top'])
    out['provision_top'] = 'accepted'
except ValueError:
    out['provision_top'] = 'refused'
t.wipe()
t.load()
# No copy of the old record may stay in the store's buffers once wiped.
out['buffers_hold_seed'] = seed in bytes(t._buf) or seed in bytes(t._tmp)
out['seed'] = t.seed == b''
emit(out)
"""


def test_counter_never_wraps_and_a_wipe_leaves_no_copy_in_the_buffers(tmp_path):
    top = 2**64 - 1
    out = mpy_json(
        WIPE_AND_TOP,
        {"img": str(tmp_path / "top.img"), "blocks": BLOCK_COUNT, "seed": secrets.token_bytes(20).hex(), "top": top},
    )
    assert out["last"] == top - 1  # the last counter whose successor still fits 8 bytes
    assert out["past_top"] == 34  # ERANGE: no code rather than counter 0's code again
    assert out["reloaded"] == top
    assert out["provision_top"] == "refused"
    assert out["buffers_hold_seed"] is False and out["seed"] is True


def _format1_record(seq: int, seed: bytes, serial: str, counter: int) -> bytes:
    """A record as format 1 (main before the clock-jump count) wrote it: b'KFS1', 116 bytes, CRC32."""
    body = struct.pack(
        "<IIQqiHBBBBBB64s16s",
        0x3153464B,
        seq,
        counter,
        1767225600,
        -2500,
        30,
        6,
        1,
        0,
        3,
        len(seed),
        len(serial),
        seed,
        serial.encode(),
    )
    return body + struct.pack("<I", binascii.crc32(body))


def test_format1_record_loads_with_no_jumps_and_the_next_save_writes_format2():
    seed = secrets.token_bytes(20)
    old = _format1_record(9, seed, "KF000123454", 17)
    assert len(old) == 120
    code = """
import store
s = store.Store('')
out = [s.provisioned, s.locked, s.mode, s.counter, s.drift_ppb, s.synced_at, s.serial, s.jumps, s.seq,
       s.seed == DATA['seed'].encode()]
s.reserve_next_counter()
s.set_drift(-2500, 1767225600, 1)
with open('store_a.bin', 'rb') as f:
    a = f.read()
with open('store_b.bin', 'rb') as f:
    b = f.read()
t = store.Store('')
out += [len(a), len(b), t.counter, t.jumps, t.seq, t.seed == s.seed]
emit(out)
"""
    # The script compares the seed itself: it is never printed.
    out = run_mpy_json(
        code.replace("DATA['seed'].encode()", "__import__('binascii').unhexlify(DATA['seed'])"),
        {"seed": seed.hex()},
        paths=PATHS,
        files={"store_a.bin": old},
    )
    assert out[:10] == [True, True, "totp", 17, -2500, 1767225600, "KF000123454", 0, 9, True]
    # reserve_next_counter wrote store_b (format 2), set_drift store_a again (format 2)
    assert out[10:] == [124, 124, 18, 1, 11, True]
