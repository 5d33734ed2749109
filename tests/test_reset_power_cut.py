"""Issue 10, point 2: a power cut at any point of a factory reset never boots an open token that
still holds the seed.

The thief's view: they hold the token and a USB cable. The power went during a reset (the owner
pulled the cable, the battery died); they plug it in and try stock mpremote at once. Whenever
mpremote gets a REPL, the flash it can read must hold no 8-byte window of the seed anywhere.

How every point of the reset is reached: a locked, provisioned token (USB PROVISION + LOCK, then
presses, so LittleFS's metadata log holds many old records) is saved as an image. The reset is
the firmware's own (``App.factory_reset()`` of the app on that image, with the sim's board and
silicon), run once uncut to count its flash operations (block writes and erases, the sim flash's
``ops``), then once per operation index with the flash set to die at that operation
(``cut_after_ops``). Each cut image is booted as a virtual token and attacked with
``mpremote connect PORT exec``. All indices, no sampling: the image is small (a 24-block
filesystem: the firmware and a few free blocks) so that a reset has a few hundred operations.

The same on the emulated Pico (the real rp2 port's boot, LittleFS and flash driver): its reset's
operations are logged by the runner, the flash after each prefix of them is rebuilt (checked
against the runner's own cuts), and every one of those images is booted and attacked.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyotp
import pytest
import serial
from keyfob.device.client import TokenClient
from keyfob.sim import VirtualToken
from keyfob.sim.token import hw_dir, micropython_exe
from oracles import b32

pytestmark = pytest.mark.timeout(900)

BLOCKS = 24
KILLED = -9

# The firmware's reset, as deployed on the image, run by the MicroPython unix port with the sim's
# parts (boards/sim/hw) but without the pty or the control socket: the flash operations are those
# of the token's reset. cut < 0: no cut, print the number of operations.
RESET = r"""
import os, sys
sys.path[:] = ['', '.frozen', '/flash', %(hw)r]
import flash
bd = flash.mount(%(img)r, '/flash', reformat=False)
os.chdir('/flash')
import board, app
a = app.App(board.make())
start = bd.ops
if %(cut)d >= 0:
    bd.cut_after_ops = start + %(cut)d
a.factory_reset()
print('RESET-OPS', bd.ops - start)
"""

# What the thief runs over the USB cable: the raw flash (the sim's image; on a board,
# rp2.Flash() or esp32.Partition) digested, and the seed the store would load.
THIEF = (
    "import os, hashlib, binascii\n"
    "h = hashlib.sha256()\n"
    "f = open(os.getenv('KEYFOB_SIM_FLASH'), 'rb')\n"
    "b = f.read(4096)\n"
    "while b:\n"
    "    h.update(b)\n"
    "    b = f.read(4096)\n"
    "f.close()\n"
    "import store\n"
    "print('FLASH', binascii.hexlify(h.digest()).decode())\n"
    "print('SEED', binascii.hexlify(hashlib.sha256(store.Store().seed).digest()).decode())\n"
)


def seed_windows(image: bytes, seed: bytes, width: int = 8) -> int:
    """How many of the seed's 8-byte windows occur anywhere in ``image`` (a count, never bytes)."""
    return sum(seed[i : i + width] in image for i in range(len(seed) - width + 1))


def run_reset(img: Path, cut: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYFOB_SIM_")}
    env["MICROPYPATH"] = ".frozen"
    code = RESET % {"hw": str(hw_dir()), "img": str(img), "cut": cut}
    # stdin: an open pipe nobody writes (the sim's USB port with no host sending).
    r, w = os.pipe()
    try:
        return subprocess.run(
            [micropython_exe(), "-c", code], env=env, stdin=r, capture_output=True, timeout=120, check=False
        )
    finally:
        os.close(r)
        os.close(w)


def thief(port: str, timeout: float) -> dict[str, str] | None:
    """Stock mpremote at the port; the lines it printed, or None when it got no REPL."""
    try:
        run = subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", port, "exec", THIEF],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    if run.returncode != 0:
        return None
    got = dict(line.split(" ", 1) for line in run.stdout.splitlines() if line[:5] in ("FLASH", "SEED "))
    return got if set(got) == {"FLASH", "SEED"} else None


@pytest.fixture(scope="module")
def locked_image(tmp_path_factory, firmware_files) -> tuple[Path, bytes]:
    """A small flash with the firmware deployed by mpremote, provisioned over USB, locked, and
    pressed 40 times (old records in LittleFS's log)."""
    wd = tmp_path_factory.mktemp("reset-cut-golden")
    seed = secrets.token_bytes(20)
    from keyfob.records import TokenRecord
    from keyfob.serials import make_serial

    rec = TokenRecord(
        serial=make_serial(secrets.randbelow(10**8)),
        mode="hotp",
        algorithm="sha1",
        digits=6,
        secret=seed,
        counter=0,
        period=30,
    )
    with VirtualToken(wd, blocks=BLOCKS) as tok:
        tok.power_on()
        tok.deploy(firmware_files)
        tok.wait_idle()
        with TokenClient(serial.Serial(tok.port, 115200, timeout=0.05), timeout=5) as client:
            client.provision(rec)
            client.lock()
            for _ in range(40):
                tok.press()
                tok.wait_idle()
            info = client.info()
        assert info.locked and info.counter >= 30  # a press the loaded machine missed is no matter
        assert tok.screen().digits() == pyotp.HOTP(b32(seed)).at(info.counter - 1)
        tok.power_off()
    image = wd / "flash.img"
    windows = seed_windows(image.read_bytes(), seed)  # counts only: a failure must not print the seed
    assert windows > 0  # the seed is on it: "none left" means something
    return image, seed


def _attack(index: int, base: Path, seed: bytes, root: Path) -> tuple[int, str, int]:
    """Cut the reset at operation ``index``, boot, attack. -> (index, outcome, seed windows)."""
    wd = root / f"cut{index}"
    wd.mkdir()
    img = wd / "flash.img"
    shutil.copyfile(base, img)
    run = run_reset(img, index)
    if run.returncode != KILLED:
        return index, f"reset not cut (exit {run.returncode})", -1
    with VirtualToken(wd) as tok:
        tok.power_on()
        got = thief(tok.port, timeout=15)
        tok.cut_power()
        image = img.read_bytes()
    windows = seed_windows(image, seed)
    if got is None:
        return index, "closed", windows
    if got["FLASH"] != hashlib.sha256(image).hexdigest():
        return index, "open, flash changed after the REPL opened", windows
    if got["SEED"] == hashlib.sha256(seed).hexdigest():
        return index, "open, store loads the seed", windows
    return index, "open", windows


def test_power_cut_at_every_flash_operation_of_a_reset_never_opens_a_token_holding_the_seed(locked_image, tmp_path):
    base, seed = locked_image
    # Uncut: count the reset's operations; the reset leaves no trace of the seed.
    count = tmp_path / "count.img"
    shutil.copyfile(base, count)
    run = run_reset(count, -1)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    ops = int(run.stdout.split(b"RESET-OPS")[1].split()[0])
    assert ops > 50, ops  # the records' wipe and the scrub of every free block
    windows = seed_windows(count.read_bytes(), seed)
    assert windows == 0

    outcomes: list[tuple[int, str, int]] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_attack, i, base, seed, tmp_path) for i in range(ops)]
        for f in concurrent.futures.as_completed(futures):
            outcomes.append(f.result())
    outcomes.sort()
    bad = [(i, what, w) for i, what, w in outcomes if what not in ("open", "closed") or (what == "open" and w)]
    assert not bad, f"{len(bad)} of {ops} cut points: first {bad[:10]}"
    kinds = {what for _, what, _ in outcomes}
    # Both happen: a cut before the reset's intent is durable leaves the old token (locked); any
    # later cut boots into finishing the scrub, then opens.
    assert kinds == {"open", "closed"}, kinds
    assert len(outcomes) == ops


# --- the same on the emulated Pico: the real rp2 port's boot, its LittleFS and flash driver ------------

# The Pico's filesystem is the port's own (1.4 MiB from 0xA0000): most of it is filled with a pad
# file before provisioning, so that a reset is a few dozen flash operations and every one of them
# can be booted. The pad holds zeros only; the seed's records and LittleFS's log of old records live
# in the blocks left free, which the reset must scrub.
PICO_FREE_BLOCKS = 5
PAD = (
    "import os\n"
    "st = os.statvfs('/')\n"
    "b = bytes(st[0])\n"
    "with open('/pad.bin', 'wb') as f:\n"
    "    for _ in range(st[3] - %d):\n"
    "        f.write(b)\n"
    "print('FREE', os.statvfs('/')[3])\n" % PICO_FREE_BLOCKS
)
# On a chip the thief reads the flash through rp2.Flash(); here the host reads the runner's
# write-through flash file the moment the REPL opens (the firmware has then stopped), which is
# the same bytes without an emulated megabyte of SHA-256. What the store would load is asked on
# the chip.
PICO_THIEF = (
    "import hashlib, binascii, store\n"
    "print('SEED', binascii.hexlify(hashlib.sha256(store.Store().seed).digest()).decode())\n"
)


def _pico_thief(port: str, timeout: float) -> str | None:
    """Stock mpremote at the Pico's port: the digest it printed, or None when it got no REPL."""
    try:
        run = subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", port, "exec", PICO_THIEF],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    got = [line.split(" ", 1)[1] for line in run.stdout.splitlines() if line.startswith("SEED ")]
    return got[0] if run.returncode == 0 and got else None


@pytest.fixture(scope="module")
def pico_reset(tmp_path_factory, pico_golden_flash):
    """A locked, provisioned, pressed Pico image; the flash operations of its factory reset by
    the power-up gesture, logged by the runner; -> (image, seed, ops)."""
    from keyfob.sim.pico import PicoToken, flash_ops
    from test_usb_provisioning import mpremote, new_record, open_client, screen_text

    wd = tmp_path_factory.mktemp("reset-cut-pico")
    rec = new_record()
    with PicoToken(wd / "owner", image=pico_golden_flash) as tok:
        tok.power_on()
        tok.wait_idle(40)
        run = mpremote(tok.port, "exec", PAD, timeout=120)
        assert run is not None and run.stdout.startswith("FREE "), run and run.stdout + run.stderr
        assert PICO_FREE_BLOCKS - 3 <= int(run.stdout.split()[1]) <= PICO_FREE_BLOCKS  # the pad's own index blocks
        tok.power_off()
        tok.power_on()
        with open_client(tok) as client:
            client.provision(rec)
            client.lock()
            for _ in range(10):  # each press writes a record holding the seed
                tok.press()
                tok.wait_idle(40)
            info = client.info()
        assert info.locked and info.counter >= 8
        tok.power_off()
    image = wd / "locked.bin"
    shutil.copyfile(wd / "owner" / "flash.bin", image)
    assert seed_windows(image.read_bytes(), rec.secret) > 0  # the seed is on it: "none left" means something

    log = wd / "reset.ops"
    with PicoToken(wd / "reset", image=image) as tok:
        # 1 s to count as held at power-up, then 5 s more to confirm (test_usb_provisioning).
        tok.power_on(hold_ms=8000, op_log=log)
        deadline = time.monotonic() + 120
        while screen_text(tok) != ["Token", "wiped"]:
            assert time.monotonic() < deadline, screen_text(tok)
            tok.run_for(200)
        tok.wait_idle(40)
        tok.power_off()
        final = tok.flash_path.read_bytes()
    ops = flash_ops(log.read_bytes())
    assert seed_windows(final, rec.secret) == 0
    return image, rec.secret, ops, final


def _pico_attack(image: bytes, index: int, seed: bytes, root: Path) -> tuple[int, str, int]:
    from keyfob.sim.pico import PicoToken

    wd = root / f"cut{index}"
    wd.mkdir()
    (wd / "flash.bin").write_bytes(image)
    with PicoToken(wd) as tok:
        tok.power_on()
        # Once the boot has done its work (an interrupted scrub finished, or the locked token
        # waiting): Ctrl-C while it runs is boot.py's first statement's job (test_lock_boot_flood).
        tok.wait_idle(60)
        got = _pico_thief(tok.port, timeout=12)  # an open token answers in about a second
        now = tok.flash_path.read_bytes()  # as the REPL found it
        tok.cut_power()
    windows = seed_windows(now, seed)
    if got is None:
        return index, "closed", windows
    if got == hashlib.sha256(seed).hexdigest():
        return index, "open, store loads the seed", windows
    return index, "open", windows


@pytest.mark.parametrize("tier", ["pico"], indirect=True)
def test_pico_power_cut_at_every_flash_operation_of_a_reset_never_opens_a_token_holding_the_seed(
    pico_reset, tmp_path, tier
):
    from keyfob.sim.pico import PicoToken, apply_op

    base, seed, ops, final = pico_reset
    start = base.read_bytes()
    assert len(ops) > 30, len(ops)  # the records' wipe and the scrub of every free block
    # ... and a few dozen, not thousands (the pad leaves 5 blocks free): each index below keeps a
    # 2 MiB image, so a reset that scrubbed the whole filesystem (~11,000 ops: 24 GB) would take
    # the machine's memory before failing. (A -n 3 run had its worker OOM-killed at 24 GB in this
    # test, cause not found; with this bound such a run fails here, saying how many.)
    assert len(ops) < 400, len(ops)

    # A power cut after n operations leaves the first n applied: rebuilt from the log, checked
    # against the runner's own cut at two points (a program, and an erase cut once finished).
    images = [start]
    flash = bytearray(start)
    for op in ops:
        apply_op(flash, op)
        images.append(bytes(flash))
    assert images[-1] == final
    erase = max(i for i, op in enumerate(ops) if op[0] == 0)
    program = len(ops) // 2 if ops[len(ops) // 2][0] == 1 else len(ops) // 2 + 1
    for n, erase_done in ((program, False), (erase, True)):
        with PicoToken(tmp_path / f"real-cut-{n}", image=base) as tok:
            tok.power_on(hold_ms=8000, cut_after_ops=n, cut_erase_done=erase_done)
            deadline = time.monotonic() + 120
            while tok.is_running:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert tok.cut_at == n
            assert tok.flash_path.read_bytes() == images[n + erase_done]

    outcomes = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_pico_attack, img, i, seed, tmp_path) for i, img in enumerate(images)]
        for f in concurrent.futures.as_completed(futures):
            outcomes.append(f.result())
    outcomes.sort()
    bad = [(i, what, w) for i, what, w in outcomes if what not in ("open", "closed") or (what == "open" and w)]
    assert not bad, f"{len(bad)} of {len(images)} cut points: first {bad[:10]}"
    assert {what for _, what, _ in outcomes} == {"open", "closed"}
