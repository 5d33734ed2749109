# Virtual flash of the virtual token: a block device backed by an image file.
#
# MicroPython's LittleFS driver (os.VfsLfs2) talks to any object with
# readblocks/writeblocks/ioctl, so this file plays the SPI/QSPI flash chip of
# an ESP32 or RP2040. It uses the extended interface (an offset inside the
# block, erase through ioctl 6), as LittleFS v2 does on the real ports.
#
# Every write goes straight to the OS file (unbuffered), so killing the
# process loses nothing that writeblocks() already returned from.
#
# Power-cut hook: with KEYFOB_SIM_CUT_AFTER_WRITES=N (or cut_after_writes=N)
# the first N writeblocks calls complete; call N+1 programs only a prefix of
# its data (len // 2 bytes, or KEYFOB_SIM_CUT_BYTES / cut_bytes) and the
# process dies on the spot, without unwinding finally blocks or closing
# files: a power cut at an exact point of a flash write.
#
# KEYFOB_SIM_CUT_AFTER_OPS=N (or cut_after_ops=N) counts erases as well: the
# first N flash operations (block writes and block erases) complete; operation
# N+1 is torn (a write programs a prefix as above; an erase erases only the
# first half of its block) and the process dies. `ops` counts them, so a test
# can enumerate every operation of a sequence and cut at each one.
#
# The unix port has no os._exit, and sys.exit / machine.soft_reset raise
# SystemExit (finally blocks and the REPL would still run). What it has is
# os.system, so the sim asks /bin/sh to SIGKILL its parent: the micropython
# process itself (exit status -9 / 137). Under CPython os._exit is used.
#
# Ctrl-C: LittleFS (C code) calls readblocks/writeblocks/ioctl. A
# KeyboardInterrupt raised in them (the sim's Ctrl-C reaches any bytecode, see
# console.py) would unwind through LittleFS and leave it half-way (seen: a
# crashed process), while on a board the flash driver is C code that Ctrl-C
# does not stop. So one raised in here is held: the operation runs again from
# its start (each is idempotent) and the interrupt is raised at the sim's next
# entry point outside LittleFS (pending.py) -- a little later than a port
# raises it. (An interrupt raised inside LittleFS's own C code cannot be held:
# see console.py on this unix port's SIGINT.)
#
# Written in the subset shared by MicroPython and CPython: the block device
# itself also works under CPython (mount() needs MicroPython's VfsLfs2).
import os

import pending

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_IOCTL_INIT = const(1)
_IOCTL_DEINIT = const(2)
_IOCTL_SYNC = const(3)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_BLOCK_ERASE = const(6)

_EIO = const(5)
_ERASED = const(0xFF)
DEFAULT_BLOCK_SIZE = const(4096)
DEFAULT_BLOCK_COUNT = const(256)  # 1 MiB, about what a small board gives its filesystem


def _env_int(name):
    value = os.getenv(name)
    if value is None or value == '':
        return None
    return int(value)


def _file_size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def power_cut():
    """Die at once, as a chip does when its supply goes: no finally, no atexit."""
    if hasattr(os, '_exit'):
        os._exit(137)
    # MicroPython unix: $PPID of the shell is this process. Again if a SIGINT got
    # the shell first.
    while True:
        os.system('kill -9 $PPID')


class FileBlockDev:
    def __init__(self, path, block_size=DEFAULT_BLOCK_SIZE, block_count=None,
                 cut_after_writes=None, cut_bytes=None, cut_after_ops=None):
        self.path = path
        self.block_size = block_size
        size = _file_size(path)
        if block_count is None:
            block_count = size // block_size if size >= block_size else DEFAULT_BLOCK_COUNT
        self.block_count = block_count
        self.created = size < 0
        if size < block_size * block_count:
            self._grow(max(size, 0))
        self._f = open(path, 'r+b', 0)
        if cut_after_writes is None:
            cut_after_writes = _env_int('KEYFOB_SIM_CUT_AFTER_WRITES')
        if cut_bytes is None:
            cut_bytes = _env_int('KEYFOB_SIM_CUT_BYTES')
        if cut_after_ops is None:
            cut_after_ops = _env_int('KEYFOB_SIM_CUT_AFTER_OPS')
        self.cut_after_writes = cut_after_writes
        self.cut_bytes = cut_bytes
        self.cut_after_ops = cut_after_ops
        self.writes = 0  # writeblocks calls so far
        self.erases = 0
        self.ops = 0  # writes + erases
        self._erased = bytes([_ERASED]) * block_size

    def _grow(self, size):
        # A new image is all erased (0xFF), like a blank flash chip.
        blank = bytes([_ERASED]) * self.block_size
        with open(self.path, 'ab') as f:
            end = self.block_size * self.block_count
            while size < end:
                n = min(end - size, self.block_size)
                f.write(blank[:n] if n < self.block_size else blank)
                size += n

    def _in_range(self, block_num, off, length):
        start = block_num * self.block_size + off
        return block_num >= 0 and off >= 0 and start + length <= self.block_size * self.block_count

    def _atomic(self, op, a, b, c):
        # No jump outside the try (a jump is where the VM raises a pending interrupt);
        # bare except: `except X` is such a place too.
        writes = self.writes
        erases = self.erases
        ops = self.ops
        try:
            return op(a, b, c)
        except:  # noqa: E722 - only KeyboardInterrupt gets here: op catches the rest
            pending.held = True
            self.writes = writes
            self.erases = erases
            self.ops = ops
            return self._atomic(op, a, b, c)

    def readblocks(self, block_num, buf, off=0):
        return self._atomic(self._read, block_num, buf, off)

    def writeblocks(self, block_num, buf, off=0):
        return self._atomic(self._write, block_num, buf, off)

    def ioctl(self, op, arg):
        return self._atomic(self._ioctl, op, arg, None)

    def _read(self, block_num, buf, off):
        try:
            if not self._in_range(block_num, off, len(buf)):
                return -_EIO
            self._f.seek(block_num * self.block_size + off)
            n = self._f.readinto(buf)
            return 0 if n == len(buf) else -_EIO
        except Exception:
            return -_EIO

    def _write(self, block_num, buf, off):
        # Without an offset (simple interface) whole blocks are written and the
        # erase is implied; with one (extended interface) LittleFS has erased first.
        try:
            if not self._in_range(block_num, off, len(buf)):
                return -_EIO
            self.writes += 1
            self.ops += 1
            self._f.seek(block_num * self.block_size + off)
            if (self.cut_after_writes is not None and self.writes > self.cut_after_writes) or self._op_cut():
                n = len(buf) // 2 if self.cut_bytes is None else min(max(self.cut_bytes, 0), len(buf))
                if n:
                    self._f.write(memoryview(buf)[:n])
                power_cut()
            self._f.write(buf)
            return 0
        except Exception:
            return -_EIO

    def _ioctl(self, op, arg, _):
        try:
            return self._ioctl_op(op, arg)
        except Exception:
            return -_EIO

    def _ioctl_op(self, op, arg):
        if op == _IOCTL_BLOCK_COUNT:
            return self.block_count
        if op == _IOCTL_BLOCK_SIZE:
            return self.block_size
        if op == _IOCTL_BLOCK_ERASE:
            if not self._in_range(arg, 0, self.block_size):
                return -_EIO
            self.erases += 1
            self.ops += 1
            self._f.seek(arg * self.block_size)
            if self._op_cut():
                self._f.write(memoryview(self._erased)[:self.block_size // 2])
                power_cut()
            self._f.write(self._erased)
            return 0
        if op == _IOCTL_INIT or op == _IOCTL_DEINIT or op == _IOCTL_SYNC:
            # Writes are unbuffered: nothing is held back to sync.
            return 0
        return None

    def _op_cut(self):
        return self.cut_after_ops is not None and self.ops > self.cut_after_ops

    def close(self):
        self._f.close()


def _blank(bdev):
    # The two superblock blocks (0 and 1) of LittleFS: erased or zeroed means never formatted.
    buf = bytearray(bdev.block_size)
    zeros = bytes(bdev.block_size)
    for b in (0, 1):
        if bdev.readblocks(b, buf) != 0:
            return False
        if buf != bdev._erased and buf != zeros:
            return False
    return True


def mount(path, mountpoint='/flash', block_count=None, block_size=DEFAULT_BLOCK_SIZE, reformat=True):
    """Mount the LittleFS v2 image at `path` on `mountpoint`; format it first when it is blank.

    A non-blank image that does not mount is formatted too when `reformat` is true, as the
    ESP32 and RP2040 ports' _boot.py do (the files are lost; `bdev.reformatted` says so).
    Returns the block device (its `writes` counts block writes).
    """
    try:
        import vfs

        lfs2 = vfs.VfsLfs2
        do_mount = vfs.mount
    except (ImportError, AttributeError):
        lfs2 = os.VfsLfs2
        do_mount = os.mount
    bdev = FileBlockDev(path, block_size=block_size, block_count=block_count)
    bdev.reformatted = False
    if bdev.created or _blank(bdev):
        lfs2.mkfs(bdev)
    try:
        fs = lfs2(bdev)
    except OSError:
        if not reformat:
            raise
        lfs2.mkfs(bdev)
        bdev.reformatted = True
        fs = lfs2(bdev)
    do_mount(fs, mountpoint)
    return bdev
