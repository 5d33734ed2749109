"""`make demo`: the token's main job end to end on a virtual token.

A script, not library code (it prints). It builds the firmware with mpy-cross, starts a
virtual token (the real MicroPython unix port with an emulated OLED, DS3231, button and
flash on a pseudo-terminal), deploys the firmware with mpremote, provisions it over the USB
protocol, presses the button and reads the codes back off the emulated OLED's pixels, next
to what pyotp computes for the same seed. Then the same in time mode, with the countdown.
"""

from __future__ import annotations

import base64
import secrets
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyotp
from rich.console import Console

from keyfob import build
from keyfob.device import TokenClient
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.sim import VirtualToken
from keyfob.sim.textread import text_lines

console = Console(highlight=False, soft_wrap=True)


def _show(tok: VirtualToken, title: str) -> str | None:
    screen = tok.screen()
    console.print(f"[bold]{title}[/bold]")
    frame = screen.quadrant_art().splitlines()
    console.print("  +" + "-" * 64 + "+")
    for line in frame:
        console.print("  |" + line + "|", style="cyan", soft_wrap=True)
    console.print("  +" + "-" * 64 + "+")
    digits = screen.digits()
    if digits is None:
        console.print(f"  screen text: {' / '.join(text_lines(screen))}")
    return digits


def _verdict(shown: str | None, want: str) -> bool:
    ok = shown == want
    mark = "[green]match[/green]" if ok else "[red]MISMATCH[/red]"
    console.print(f"  decoded from the OLED: [bold]{shown}[/bold]   pyotp: [bold]{want}[/bold]   {mark}\n")
    return ok


def _provision(tok: VirtualToken, record: TokenRecord, now: float) -> None:
    with TokenClient(tok.port) as client:
        kcv = client.provision(record)
        client.settime(now)
        client.lock()
        info = client.info()
    console.print(
        f"  provisioned over USB: serial {info.serial}, {info.mode}/{info.algorithm}/{info.digits} digits, "
        f"key check value {kcv} verified, locked={info.locked}"
    )


def main() -> int:
    started = time.monotonic()
    ok = True
    with tempfile.TemporaryDirectory(prefix="keyfob-demo-") as tmp:
        work = Path(tmp)
        console.rule("keyfob demo: a virtual token")
        files = build.build("sim", work / "build")
        console.print(f"compiled {len(files)} firmware files with mpy-cross")
        with VirtualToken(work / "token") as tok:
            tok.power_on()
            console.print(f"virtual token powered on; its USB serial port is {tok.port}")
            tok.deploy(files)
            tok.wait_idle()
            console.print("firmware deployed with mpremote and the token soft-reset")
            _show(tok, "boot screen (I2C scan)")

            # HOTP: an event token. The seed stays in this process: never printed.
            seed = secrets.token_bytes(20)
            record = TokenRecord(make_serial(1), "hotp", "sha1", 6, seed)
            _provision(tok, record, time.time())
            hotp = pyotp.HOTP(base64.b32encode(seed).decode())
            for counter in range(2):
                tok.press()
                tok.wait_idle()
                shown = _show(tok, f"press {counter + 1}: HOTP counter {counter}")
                ok &= _verdict(shown, hotp.at(counter))

            # Factory reset needs the button held (physical presence), then time mode.
            console.rule("factory reset (button held), then time mode")
            with ThreadPoolExecutor(1) as pool, TokenClient(tok.port) as client:
                pending = pool.submit(client.reset)
                while "Hold button" not in text_lines(tok.screen()):
                    time.sleep(0.05)
                _show(tok, "the token asks for physical presence")
                tok.hold()
                pending.result(timeout=20)
                tok.release()
            tok.wait_idle()
            _show(tok, "after the reset")
            seed = secrets.token_bytes(20)
            record = TokenRecord(make_serial(2), "totp", "sha1", 6, seed, period=30)
            now = time.time()
            tok.set_clock(now)  # the DS3231 keeps UTC on its coin cell
            _provision(tok, record, now)
            tok.press()
            tok.wait_idle()
            t = tok.clock()[0]
            shown = _show(tok, "TOTP code with its countdown bar")
            ok &= _verdict(shown, pyotp.TOTP(base64.b32encode(seed).decode()).at(int(t)))
            time.sleep(2.2)
            screen = tok.screen()
            console.print(f"  two seconds later the bar is at {screen.bar():.0%} of its width")
            tok.power_off()
        verdict = "all codes match" if ok else "MISMATCH"
        console.rule(f"done in {time.monotonic() - started:.1f} s: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
