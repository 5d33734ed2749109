# wipe.py: the factory reset of the flash, Store.wipe() (notes in store.py).
# Every step may be cut by a power loss; run() resumes from any of them.
import os

from micropython import const

import store

_CHUNK = const(512)
_MAX = const(0x2000000)  # 32 MiB: larger is no microcontroller's flash (a PC)
_ENOSPC = const(28)
FILL = 'kfscrub.bin'  # the zeros written over the free space


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def fill(where, progress=None):
    # Zeros over all free space of the filesystem holding `where` (a path
    # prefix: '' or ending in '/'), so every free block is erased and
    # programmed; -> bytes written. progress(done, total) after each
    # filesystem block and at the end.
    st = os.statvfs(where or '.')
    if st[0] * st[2] > _MAX:
        return 0
    total = st[0] * st[3]
    block = st[0] if st[0] >= _CHUNK else _CHUNK
    chunk = bytes(_CHUNK)
    n = 0
    path = where + FILL
    if progress is not None:
        progress(0, total)
    try:
        with open(path, 'wb') as f:
            while f.write(chunk) == _CHUNK:
                n += _CHUNK
                if progress is not None and n % block == 0:
                    progress(n if n < total else total, total)
    except OSError as e:
        if e.errno != _ENOSPC:  # full is the goal; anything else left free space unwritten
            _remove(path)
            raise
    _remove(path)
    store._sync()
    if progress is not None:
        progress(total, total)
    return n


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def marked(s, seq):
    # Store.load() found MARK: a wipe was cut short. Locked, and no seed in
    # RAM, until run() completes. -> False (no record loaded).
    s._clear()
    s.wiping = True
    s.locked = True
    s.seq = seq if seq > 0 else 0
    return False


def run(s, progress=None):
    # s: the store.Store. -> bytes zeroed.
    root = '' if s._own else s._dir  # MARK and FILL: outside DIR, which goes
    mark = root + store.MARK
    if not s.wiping:
        # 1. Durable intent before any destructive write: from here on every
        #    load() reads `wiping` (locked, no seed) until step 4.
        with open(mark, 'wb'):
            pass
        store._sync()
    seq = s.seq
    s._clear()
    s.wiping = True
    s.locked = True
    s.seq = seq
    # 2. The records (zeroed first: on FAT that overwrites them in place), then DIR.
    for path in s._paths:
        if _exists(path):
            with open(path, 'wb') as f:
                f.write(s._tmp)  # all zeros after _clear()
            os.remove(path)
    if s._own:
        try:
            os.rmdir(store.DIR)
        except OSError:
            pass  # gone already (a wipe resumed after this step)
    # 3. Zeros over every free block (a leftover fill first: it holds free space).
    _remove(root + FILL)
    n = fill(root, progress)
    # 4. Complete: the token may open.
    os.remove(mark)
    store._sync()
    s.wiping = False
    s.locked = False
    # seq keeps rising in this power-up: should a file have survived, the next record outranks it.
    s._have_dir = not s._own
    return n
