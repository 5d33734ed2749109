"""The unix tier's boot stand-in (boards/sim/hw/rom.py) boots like the ports (FIELD-NOTES, "The
ports' boot sequence"; shared/runtime/pyexec.c): Ctrl-C is on when boot.py starts and on again when
main.py starts, whatever boot.py left it at; a Ctrl-C still pending when a file ends is raised as
that file's own exception; a boot.py that raises skips main.py and the REPL opens, traceback
printed; and a Ctrl-C interrupts pure Python that does no I/O at all, not only at the sim's parts.

Each test puts a small stand-in boot.py/main.py on a blank virtual flash (not the token firmware),
power-cycles, and reads what the token printed on its USB port.
"""

from __future__ import annotations

import os
import time

import pytest
import serial
from keyfob.deploy import Repl
from keyfob.sim import VirtualToken
from keyfob.sim.token import wait_for
from test_usb_provisioning import tap

pytestmark = pytest.mark.timeout(60)

MAIN_RAN = "print('MAIN' + ' RAN')\n"  # the test looks for "MAIN RAN", not the source text
SPIN = "print('SP' + 'IN')\nwhile True:\n    pass\n"  # no I/O, no call into the sim's parts


def _boot(tmp_path, files: dict[str, str]) -> tuple[VirtualToken, bytearray]:
    """A token with these files on its flash, powered on; and what it says from power-on."""
    tok = VirtualToken(tmp_path / "tok")
    tok.power_on()  # blank flash: formatted, straight to the REPL
    with Repl(tok.port) as repl:
        repl.enter()
        for name, text in files.items():
            repl.write_file(name, text.encode())
    tok.cut_power()
    out = tap(tok)
    tok.power_on()
    return tok, out


def _wait_for(out: bytearray, text: bytes, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    while text not in out:
        assert time.monotonic() < deadline, f"never saw {text!r} in {bytes(out)[-400:]!r}"
        time.sleep(0.01)
    return bytes(out)


def _ctrl_c(tok: VirtualToken) -> None:
    with serial.Serial(tok.port, 115200, timeout=0) as s:
        s.write(b"\x03")
        s.flush()


def _traceback(said: bytes, name: str, kind: bytes) -> bool:
    return b"Traceback" in said and f'File "{name}"'.encode() in said and kind in said


def test_ctrl_c_is_on_when_boot_py_starts_and_interrupts_pure_python(tmp_path):
    tok, out = _boot(tmp_path, {"boot.py": SPIN, "main.py": MAIN_RAN})
    with tok:
        _wait_for(out, b"SPIN")
        _ctrl_c(tok)
        said = _wait_for(out, b">>> ")  # boot.py ended by the interrupt: the REPL, not main.py
        assert _traceback(said, "boot.py", b"KeyboardInterrupt"), said[-400:]
        assert b"MAIN RAN" not in said
        assert tok.is_running


def test_ctrl_c_is_on_again_when_main_py_starts_though_boot_py_turned_it_off(tmp_path):
    boot = "import micropython\nmicropython.kbd_intr(-1)\nprint('BOOT' + ' DONE')\n"
    tok, out = _boot(tmp_path, {"boot.py": boot, "main.py": SPIN})
    with tok:
        said = _wait_for(out, b"SPIN")
        assert b"BOOT DONE" in said
        _ctrl_c(tok)
        said = _wait_for(out, b">>> ")
        assert _traceback(said, "main.py", b"KeyboardInterrupt"), said[-400:]


def test_boot_py_raising_skips_main_py_and_opens_the_repl(tmp_path):
    tok, out = _boot(tmp_path, {"boot.py": "raise ValueError('boot' + ' says no')\n", "main.py": MAIN_RAN})
    with tok:
        said = _wait_for(out, b">>> ")
        assert _traceback(said, "boot.py", b"ValueError: boot says no"), said[-400:]
        assert b"MAIN RAN" not in said
        with Repl(tok.port) as repl:  # the REPL is really there
            repl.enter()
            assert repl.exec("print(6 * 7)").strip() == b"42"


def test_a_ctrl_c_still_pending_when_boot_py_ends_is_raised_as_boot_py_s_own(tmp_path):
    # boot.py waits in one C call (reading a FIFO: no pending check there, and none after it
    # up to the end of the file) while the Ctrl-C comes; then the test lets it go on. The
    # Ctrl-C that came meanwhile ends boot.py all the same, after its last line.
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    boot = f"print('WAI' + 'TING')\nopen({str(fifo)!r}).read()\nprint('BOOT', 'DONE')\n"
    tok, out = _boot(tmp_path, {"boot.py": boot, "main.py": MAIN_RAN})
    with tok:
        _wait_for(out, b"WAITING")
        _ctrl_c(tok)
        assert wait_for(lambda: tok._bridge._holding, 10)  # it is there, not raised yet
        with open(fifo, "w") as f:
            f.write("go")
        said = _wait_for(out, b">>> ")
        assert b"BOOT DONE" in said  # the interrupt did not stop the C call ...
        assert b"KeyboardInterrupt" in said, said[-600:]
        assert said.index(b"BOOT DONE") < said.index(b"KeyboardInterrupt")  # ... it came after
        assert b"Traceback" in said
        assert b"MAIN RAN" not in said
