# Power-safe persistent state of the token.
#
# Layout on the filesystem: two record files, A and B, written in turn.
# Every save writes the *other* file than the one holding the newest good
# record, with seq = newest seq + 1, so the newest good record is never the
# one being written. Each record is one fixed 124-byte struct ending in a
# CRC32 over everything before it (format 2; a format 1 record, 120 bytes
# without the clock-jump count, still loads, as 0 jumps, and the next save
# writes format 2). Loading reads both files and keeps the
# good record (magic, CRC, sane fields) with the highest seq.
#
# Why this and not only LittleFS: LittleFS v2 (ESP32, RP2040, the virtual
# token) is copy-on-write, and a file's new content becomes visible only when
# it is closed or synced, so a cut during a save normally leaves the old
# content of that file. The A/B pair with seq + CRC does not rely on that: if
# a filesystem (FAT, a buggy port, a worn block) ever shows a torn or stale
# file, its CRC fails or its seq is lower, and the other file still holds the
# previous state. The worst a cut can do is lose the save in progress.
#
# HOTP: reserve_next_counter() stores counter + 1 and returns the counter only
# after the file is closed (and os.sync() where the port has it). The code
# for that counter is computed and shown after the return, so a shown code's
# counter is always durable as used: no code is ever shown twice, and a cut
# during the save skips at most one counter value.
#
# wipe() (firmware/wipe.py): a deleted record is not gone on LittleFS: a
# 120-byte file is stored inline in its directory's metadata pair, an
# append-only log of commits that keeps every record until compaction (on the
# virtual flash, 25 old records with the seed after 3,000 presses), and
# blocks of a relocated pair keep their bytes until reused. So the records
# live in a directory of their own (DIR), and wipe() 1. creates MARK before
# any destructive write: from then on load() reads `wiping` (locked, no seed
# loaded); 2. zeroes and removes the records and DIR; 3. writes zeros over all
# free space (every free block erased and programmed) and removes them;
# 4. removes MARK. The app's start-up finishes a wipe that a power cut
# stopped before anything else runs, so the token never opens while an old
# record may be on the flash. Cost: one erase and program per free block
# (10-20 s per MiB of NOR flash). Out of reach: a flash chip's own wear
# levelling, and anyone holding the chip (ESP32 flash encryption is the real
# protection there).
#
# seq is 32-bit: one save a second for 136 years before it wraps; the flash
# wears out long before.
import binascii
import os
import struct

from micropython import const

_MAGIC = const(0x3253464B)  # b'KFS2' read as a little-endian u32: format version 2
_SEED_MAX = const(64)
_SERIAL_MAX = const(16)

# Little-endian, no padding. Offsets are fixed: the press path patches seq,
# counter and CRC in place.
_FMT = '<IIQqiHBBBBBB64s16sI'
_OFF_SEQ = const(4)
_OFF_COUNTER = const(8)
_OFF_SMALL = const(28)  # period, digits, mode, algorithm, flags, seed and serial lengths
_SMALL = '<HBBBBBB'
_OFF_SEED = const(36)
_OFF_SERIAL = const(100)
COUNTER_LAST = 0xFFFFFFFFFFFFFFFF  # 2**64 - 1: the last counter that may still be stored
_BODY = const(120)  # bytes covered by the CRC
_OFF_CRC = const(120)
REC_SIZE = const(124)
# Format 1 (b'KFS1', 0x3153464B): 120 bytes, the same up to the serial, then its CRC.

_F_PROVISIONED = const(1)
_F_LOCKED = const(2)

MODES = ('hotp', 'totp')
ALGORITHMS = ('sha1', 'sha256')

_NAMES = ('store_a.bin', 'store_b.bin')
DIR = 'kfstate'  # the records' own directory (relative: '/' on a board, /flash on the sim)
MARK = 'kfwipe'  # exists from the first write of a wipe until its scrub is complete


def _sync():
    sync = getattr(os, 'sync', None)
    if sync is not None:
        sync()


class Store:
    # jumps: clock jumps a locked token accepted (its clock was lost), for INFO.
    """The token's state, loaded on construction.

    Fields (plain attributes): mode, algorithm, digits, period, counter (the
    next HOTP counter), drift_ppb, synced_at, seed, serial, locked,
    provisioned, seq. Change them and call save(), or use the methods that
    save for you. reserve_next_counter() persists only the counter on top of
    the last saved or loaded record.
    """

    def __init__(self, dirpath=None):
        # dirpath None = DIR in the current directory ('/' on a board, /flash
        # on the sim), made at the first save (again after a wipe: the app
        # removes it to scrub); a given dirpath ('' = the current directory)
        # must exist.
        self._own = dirpath is None
        if self._own:
            dirpath = DIR
        if dirpath and not dirpath.endswith('/'):
            dirpath += '/'
        self._dir = dirpath
        self._have_dir = not self._own
        self._paths = (dirpath + _NAMES[0], dirpath + _NAMES[1])
        self._buf = bytearray(REC_SIZE)
        self._mv = memoryview(self._buf)
        self._body = self._mv[:_BODY]
        self._tmp = bytearray(REC_SIZE)
        self.load()

    def _clear(self):
        self.mode = 'hotp'
        self.algorithm = 'sha1'
        self.digits = 6
        self.period = 30
        self.counter = 0  # the next HOTP counter to use
        self.drift_ppb = 0  # clock drift in parts per billion (+ = token clock fast)
        self.synced_at = 0  # Unix time of the last clock sync (0 = never)
        self.jumps = 0  # clock jumps accepted on the locked token (docs/protocol.md 5)
        self.seed = b''
        self.serial = ''
        self.locked = False
        self.provisioned = False
        self.wiping = False  # a wipe is under way or was cut short: reads as locked
        self.seq = 0  # seq of the newest good record (0 = none)
        self._slot = 1  # file holding that record; the next save goes to the other
        # Both buffers: after a wipe no copy of the old record (seed and all)
        # may stay in RAM, where a reopened REPL could read it.
        for i in range(REC_SIZE):
            self._buf[i] = 0
            self._tmp[i] = 0

    # --- loading ----------------------------------------------------------

    def _read(self, path):
        # Read one record file into self._tmp; return its seq, or -1 if not good.
        try:
            with open(path, 'rb') as f:
                n = f.readinto(self._tmp)
        except OSError:
            return -1
        t = self._tmp
        magic, seq = struct.unpack_from('<II', t, 0)
        # Format 2, or format 1 (120 bytes, CRC at 116); the CRC ends the record.
        if magic != (_MAGIC if n == REC_SIZE else 0x3153464B if n == 120 else -1):
            return -1
        if struct.unpack_from('<I', t, n - 4)[0] != binascii.crc32(memoryview(t)[:n - 4]):
            return -1
        # The small fields only: unpacking the whole record would leave a copy
        # of the seed behind in the heap.
        period, digits, mode, algo, _, seed_len, serial_len = struct.unpack_from(_SMALL, t, _OFF_SMALL)
        if mode >= len(MODES) or algo >= len(ALGORITHMS):
            return -1
        if seed_len > _SEED_MAX or serial_len > _SERIAL_MAX or period == 0 or not 6 <= digits <= 8:
            return -1
        return seq

    def load(self):
        """Load the newest good record. Returns True if one was found.

        Missing, torn or corrupt files are skipped; with no good record the
        store is empty (unprovisioned). Never raises for bad flash content.
        """
        best_seq = -1
        best_slot = 1
        self._clear()
        for slot in (0, 1):
            try:
                seq = self._read(self._paths[slot])
            except (OSError, ValueError):  # a file that is not a record
                seq = -1
            if seq > best_seq:
                best_seq = seq
                best_slot = slot
                self._buf[:] = self._tmp
        if self._buf[3] == 0x31:  # format 1 ('KFS1') -> 2 in RAM: no jumps; saves write format 2
            self._buf[3] = 0x32
            self._buf[116:] = bytes(8)  # jumps and CRC (made at the next save)
        try:
            os.stat(MARK if self._own else self._dir + MARK)
        except OSError:
            pass
        else:
            import wipe
            return wipe.marked(self, best_seq)
        if best_seq < 0:
            return False
        self._have_dir = True  # a record was read: its directory exists
        self.seq, self.counter, self.synced_at, self.drift_ppb = struct.unpack_from('<IQqi', self._buf, _OFF_SEQ)
        period, digits, mode, algo, flags, seed_len, serial_len = struct.unpack_from(_SMALL, self._buf, _OFF_SMALL)
        self.period = period
        self.digits = digits
        self.mode = MODES[mode]
        self.algorithm = ALGORITHMS[algo]
        self.provisioned = bool(flags & _F_PROVISIONED)
        self.locked = bool(flags & _F_LOCKED)
        self.jumps = struct.unpack_from('<I', self._buf, 116)[0]
        self.seed = bytes(self._mv[_OFF_SEED:_OFF_SEED + seed_len])  # the one copy in RAM
        try:
            self.serial = str(self._mv[_OFF_SERIAL:_OFF_SERIAL + serial_len], 'ascii')
        except ValueError:  # a serial that is not text is shown as none
            self.serial = ''
        self._slot = best_slot
        return True

    # --- saving -----------------------------------------------------------

    def _pack(self):
        flags = (_F_PROVISIONED if self.provisioned else 0) | (_F_LOCKED if self.locked else 0)
        struct.pack_into(
            _FMT, self._buf, 0,
            _MAGIC, self.seq, self.counter, self.synced_at, self.drift_ppb,
            self.period, self.digits, MODES.index(self.mode), ALGORITHMS.index(self.algorithm),
            flags, len(self.seed), len(self.serial), self.seed, self.serial.encode(), self.jumps)

    def _commit(self):
        # Write self._buf (all fields but seq and CRC set) as the next record.
        # Only after the file is closed does the new record count as current.
        seq = self.seq + 1
        struct.pack_into('<I', self._buf, _OFF_SEQ, seq)
        struct.pack_into('<I', self._buf, _OFF_CRC, binascii.crc32(self._body))
        slot = 1 - self._slot
        if not self._have_dir:
            try:
                os.mkdir(DIR)
            except OSError:
                pass  # there already (EEXIST); a real failure shows at open()
            self._have_dir = True
        with open(self._paths[slot], 'wb') as f:
            n = f.write(self._buf)
        if n != REC_SIZE:
            raise OSError(28)  # ENOSPC: a short write means no room
        _sync()
        self.seq = seq
        self._slot = slot

    def save(self):
        """Store all fields atomically (the previous record stays until this one is complete)."""
        self._check(self.seed, self.serial, self.mode, self.algorithm, self.digits, self.period)
        self._pack()
        self._commit()

    def reserve_next_counter(self):
        """Make the next HOTP counter durable as used, then return it.

        Compute and show the code from the returned value only. If this
        raises (flash full or failing), show no code.
        """
        if not self.provisioned:
            raise ValueError('not provisioned')
        c = self.counter
        if c >= COUNTER_LAST:
            # counter + 1 would not fit the 8-byte field (RFC 4226) and wrap to
            # 0, showing old codes again: the token's counter space is used up.
            raise OSError(34)  # ERANGE
        # Move on in memory first: after a failed write the value may or may
        # not be on the flash, so it must never be handed out again.
        self.counter = c + 1
        struct.pack_into('<Q', self._buf, _OFF_COUNTER, c + 1)
        self._commit()
        return c

    # --- changes ----------------------------------------------------------

    @staticmethod
    def _check(seed, serial, mode, algorithm, digits, period):
        # Messages never include the seed.
        if mode not in MODES:
            raise ValueError('mode must be hotp or totp')
        if algorithm not in ALGORITHMS:
            raise ValueError('algorithm must be sha1 or sha256')
        if not 6 <= digits <= 8:
            raise ValueError('digits must be 6..8')
        if not 1 <= period <= 0xFFFF:
            raise ValueError('period out of range')
        if len(seed) > _SEED_MAX:
            raise ValueError('seed too long')
        if len(serial.encode()) != len(serial) or len(serial) > _SERIAL_MAX:
            raise ValueError('serial must be ASCII, at most 16 chars')

    def provision(self, seed, serial, mode='hotp', algorithm='sha1', digits=6, period=30, counter=0):
        """Replace the token's secret and settings; clears drift and lock."""
        seed = bytes(seed)
        if len(seed) < 16:
            raise ValueError('seed too short (RFC 4226: at least 128 bits)')
        self._check(seed, serial, mode, algorithm, digits, period)
        if not 0 <= counter < COUNTER_LAST:
            raise ValueError('counter out of range')
        self.seed = seed
        self.serial = serial
        self.mode = mode
        self.algorithm = algorithm
        self.digits = digits
        self.period = period
        self.counter = counter
        self.drift_ppb = 0
        self.synced_at = 0
        self.jumps = 0
        self.locked = False
        self.provisioned = True
        self.save()

    def set_drift(self, drift_ppb, synced_at, jumps=0):
        # jumps: clock jumps to count in the same write (docs/protocol.md 5).
        """Store the clock drift (int, parts per billion; a float is taken as ppm) and the sync time."""
        if isinstance(drift_ppb, float):
            drift_ppb = int(round(drift_ppb * 1000))
        if not -0x80000000 <= drift_ppb <= 0x7FFFFFFF:
            raise ValueError('drift out of range')
        self.drift_ppb = drift_ppb
        self.synced_at = int(synced_at)
        self.jumps = min(self.jumps + jumps, 0xFFFFFFFF)
        self.save()

    def lock(self):
        self.locked = True
        self.save()

    def unlock(self):
        self.locked = False
        self.save()

    def wipe(self, progress=None):
        # Factory reset of the flash (notes at the top), resuming one cut
        # short; progress(done, total) in bytes of free space zeroed. OSError
        # when the flash fails: the store stays `wiping` (locked); run again.
        # -> bytes zeroed. Its own module: rarely run, and store.py loads in
        # a small heap.
        import wipe

        return wipe.run(self, progress)
