"""The emulated Pico itself: the unmodified MicroPython UF2 in rp2040js, with the parts, the
flash and the USB port a Pico-based token has (keyfob.sim.pico, boards/sim/pico/runner.mjs).
What the firmware does on it is tested by the tier-parametrized tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import pico_missing
from keyfob.sim import pico

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(bool(pico_missing()), reason=f"Pico tier skipped: {pico_missing()}"),
]

MPREMOTE = str(Path(sys.executable).with_name("mpremote"))


def mpremote(tok, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Stock mpremote on ``tok``'s port. On a pty it waits without end for a chip that never answers
    (seen once in a full run); the failure then says what the chip was doing."""
    try:
        return subprocess.run([MPREMOTE, "connect", tok.port, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        log = tok.workdir / "chip.log"
        raise AssertionError(
            f"mpremote {args[0]} got no answer in {timeout:g} s; it had printed {exc.stdout!r} / {exc.stderr!r};"
            f" chip running: {tok.is_running}, exit code {tok.exit_code}, resets {tok.resets},"
            f" emulated ms {tok._emu_ms}; chip.log: {log.read_text()[-2000:] if log.exists() else '(none)'!r}"
        ) from None


def test_stock_mpremote_meets_the_real_rp2_port(tmp_path):
    with pico.PicoToken(tmp_path / "p") as tok:
        tok.power_on()
        out = mpremote(tok, "exec", "import sys, gc; print(sys.implementation._machine); print(gc.mem_free())")
        assert out.returncode == 0, out.stderr
        machine, free = out.stdout.split("\n")[:2]
        assert machine == "Raspberry Pi Pico with RP2040"
        assert 200_000 < int(free) < 264_000  # the chip's heap, not a laptop's


def test_parts_answer_on_the_bus_and_scan_finds_them(tmp_path):
    code = (
        "from machine import I2C, Pin\n"
        "i2c = I2C(0, sda=Pin(4), scl=Pin(5))\n"
        "print(i2c.scan())\n"
        "print(i2c.readfrom_mem(0x68, 0, 7).hex())\n"
        "try:\n"
        "    i2c.writeto(0x50, b'x')\n"
        "except OSError as e:\n"
        "    print('nack', e.errno)\n"
    )
    when = 1_900_000_000  # 2030-03-17 17:46:40 UTC, a Sunday
    with pico.PicoToken(tmp_path / "a") as tok:
        tok.set_clock(when)
        tok.power_on()
        out = mpremote(tok, "exec", code)
        scan, regs, nack = out.stdout.split("\n")[:3]
        assert scan == "[60, 104]"  # 0x3C OLED, 0x68 DS3231, found by the port's bit-banged scan
        # BCD seconds..year (seconds may have moved on while mpremote connected)
        assert regs[2:] == "461707170330"
        assert int(regs[:2]) >= 40
        assert nack == "nack 5"  # EIO, as a chip says: no device at 0x50
    with pico.PicoToken(tmp_path / "b", oled_addr=0x3D) as tok:
        tok.power_on()
        assert mpremote(tok, "exec", code).stdout.split("\n")[0] == "[61, 104]"


def test_a_closed_token_never_touches_the_descriptors_it_had(tmp_path):
    """A closed token's port thread ends before its descriptors close: a closed number is the next
    file any thread opens, and a late read there took the first 4 KB of another token's flash
    image as it was checked for boot2 (that token then showed BOOTSEL, and mpremote on its port
    waited without end: the suite's rare "no answer after power_on")."""
    tok = pico.PicoToken(tmp_path / "one")
    tok.close()
    assert not tok._pty_thread.is_alive()

    # as the suite makes them: tokens made and closed on several threads at once
    broken: list[str] = []

    def make(folder: Path) -> None:
        for i in range(40):
            tok = pico.PicoToken(folder / str(i))
            image = tok.flash_path.read_bytes()
            if len(image) != pico.FLASH_SIZE or not pico.bootable(image[:256]):
                broken.append(f"{folder.name}/{i}: {len(image)} bytes")
            tok.close()

    threads = [threading.Thread(target=make, args=(tmp_path / f"t{j}",)) for j in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert broken == []


def test_close_waits_for_a_uf2_the_drive_is_programming(tmp_path):
    """close() right after a UF2 lands on the BOOTSEL drive returns once the drive's thread is
    done with it: nothing writes the token's flash after close() is back."""
    tok = pico.PicoToken(tmp_path / "bare", bare=True)
    tok.power_on()
    assert tok.in_bootsel
    shutil.copyfile(pico.find_inputs().uf2, tok.drive / "firmware.uf2")
    time.sleep(0.05)
    tok.close()
    assert not tok._bootsel_thread.is_alive()
    image = tok.flash_path.read_bytes()
    time.sleep(0.3)
    assert tok.flash_path.read_bytes() == image
    assert not tok.is_running  # and no chip was started by it


def test_files_survive_power_cuts_in_the_flash_file(tmp_path):
    with pico.PicoToken(tmp_path / "p") as tok:
        tok.power_on()
        port = tok.port
        out = mpremote(tok, "exec", "with open('note.txt', 'w') as f: f.write('kept across power')")
        assert out.returncode == 0, out.stderr
        tok.cut_power()
        assert b"kept across power" in tok.fs_image()  # LittleFS wrote it into flash 0xA0000+
        tok.power_on()
        assert tok.port == port  # one pseudo-terminal for the token's whole life
        out = mpremote(tok, "exec", "print(open('note.txt').read())")
        assert out.stdout.strip() == "kept across power"


def test_watchdog_reset_starts_a_new_chip_on_the_same_port(tmp_path):
    with pico.PicoToken(tmp_path / "p") as tok:
        tok.power_on()
        port = tok.port
        mpremote(tok, "exec", "--no-follow", "import machine; machine.reset()", timeout=20)
        deadline = time.monotonic() + 20
        while tok.resets == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tok.resets == 1
        assert tok.port == port  # the new chip on the same pseudo-terminal
        out = mpremote(tok, "exec", "import machine; print(machine.reset_cause() == machine.WDT_RESET)")
        assert out.returncode == 0, out.stderr


def test_bootsel_drive_takes_the_uf2_and_the_chip_boots_it(tmp_path):
    with pico.PicoToken(tmp_path / "p", bare=True) as tok:
        tok.power_on()
        assert tok.in_bootsel and not tok.is_running
        info = (tok.drive / "INFO_UF2.TXT").read_text()
        assert "Board-ID: RPI-RP2" in info
        keyfob = str(Path(sys.executable).with_name("keyfob"))
        out = subprocess.run(
            [keyfob, "flash", "--board", "rp2040", "--drive", str(tok.drive), "--image", str(tok.inputs.uf2)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert not tok.drive.exists()
        deadline = time.monotonic() + 20
        while not tok.is_running and time.monotonic() < deadline:
            time.sleep(0.1)
        out = mpremote(tok, "exec", "import sys; print(sys.implementation._machine)")
        assert out.stdout.strip() == "Raspberry Pi Pico with RP2040"


def _spoiled(tok) -> None:
    # Two sectors of filesystem garbage: the port's _boot.py then formats the filesystem,
    # erasing and programming sector 0xA0000, then 0xA1000 (ops 0, 1, 2, 3).
    flash = bytearray(tok.flash_path.read_bytes())
    flash[pico.FS_START : pico.FS_START + 8192] = bytes(8192)
    tok.flash_path.write_bytes(flash)


def _cut_boot(tok, **cut) -> bytes:
    tok.power_on(**cut)
    deadline = time.monotonic() + 20
    while tok.is_running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not tok.is_running
    return tok.flash_path.read_bytes()


@pytest.mark.parametrize("erase_done", [False, True])
def test_a_power_cut_keeps_exactly_the_finished_flash_ops(tmp_path, erase_done):
    s0, s1 = pico.FS_START, pico.FS_START + 4096
    with pico.PicoToken(tmp_path / "p") as tok:
        _spoiled(tok)
        if not erase_done:
            after = _cut_boot(tok, cut_after_ops=1)  # op 0 (erase s0) done, op 1 (program) not
            assert tok.cut_at == 1
            assert after[s0 : s0 + 4096] == b"\xff" * 4096
            assert after[s1 : s1 + 4096] == bytes(4096)
        else:
            after = _cut_boot(tok, cut_after_ops=2, cut_erase_done=True)  # the cut comes as op 2 ends
            assert tok.cut_at == 2
            assert after[s0 : s0 + 4096] not in (b"\xff" * 4096, bytes(4096))  # programmed
            assert after[s1 : s1 + 4096] == b"\xff" * 4096
