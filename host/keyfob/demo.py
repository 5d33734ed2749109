"""`make demo`: the token's main job end to end on a virtual token.

A script, not library code (it prints). It builds the firmware with mpy-cross, starts a
virtual token (the real MicroPython unix port with an emulated OLED, DS3231, button and
flash on a pseudo-terminal), deploys the firmware with mpremote, provisions it over the USB
protocol, presses the button and reads the codes back off the emulated OLED's pixels, next
to what pyotp computes for the same seed. Then the same in time mode, with the countdown.
"""

from __future__ import annotations

import base64
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyotp
from rich.console import Console

from keyfob import build
from keyfob.device import TokenClient
from keyfob.formats import read_seed_file
from keyfob.provision import Protection, provision_batch
from keyfob.records import TokenRecord
from keyfob.sim import VirtualToken
from keyfob.sim.textread import text_lines
from keyfob.verifier import Verifier

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


def _provision(tok: VirtualToken, out: Path, protection: Protection, **settings) -> tuple[TokenRecord, Path]:
    """`keyfob provision` on one token: INFO, PROVISION (key check value), SETTIME, LOCK; the seed
    goes only into the encrypted PSKC seed file (and this process's memory)."""
    result = provision_batch([tok.port], out, protection, **settings)
    if not result.ok:
        raise SystemExit(f"provisioning failed: {result.failed}")
    for done in result.done:
        info = done.info
        console.print(
            f"  provisioned over USB: serial {info.serial}, {info.mode}/{info.algorithm}/{info.digits} digits, "
            f"key check value verified, locked={info.locked}"
        )
    console.print(f"  seed file (PSKC, AES key in {protection.key_file.name}): {result.seed_file.name}")
    (record,) = read_seed_file(result.seed_file, key=protection.key)
    return record, result.seed_file


def _press(tok: VirtualToken, title: str) -> str | None:
    tok.press()
    tok.wait_idle()
    return _show(tok, title)


def main() -> int:
    started = time.monotonic()
    ok = True
    with tempfile.TemporaryDirectory(prefix="keyfob-demo-") as tmp:
        work = Path(tmp)
        console.rule("keyfob demo: a virtual token")
        files = build.build("sim", work / "build")
        console.print(f"compiled {len(files)} firmware files with mpy-cross")
        protection = Protection.from_key_file(work / "transport.key")
        with VirtualToken(work / "token") as tok:
            tok.power_on()
            console.print(f"virtual token powered on; its USB serial port is {tok.port}")
            tok.deploy(files)
            tok.wait_idle()
            console.print("firmware deployed with mpremote and the token soft-reset")
            _show(tok, "boot screen (I2C scan)")

            # HOTP, an event token. The seed never appears on screen.
            console.rule("event mode (HOTP, RFC 4226)")
            record, seed_file = _provision(tok, work / "seeds", protection, mode="hotp")
            hotp = pyotp.HOTP(base64.b32encode(record.secret).decode())
            codes = []
            for counter in range(2):
                shown = _press(tok, f"press {counter + 1}: HOTP counter {counter}")
                ok &= _verdict(shown, hotp.at(counter))
                codes.append(shown)

            # The login side: the seed file goes into the verifier's inventory; alice links the
            # token by serial + its current code, then signs in with password and code in one field.
            console.rule("the verifier")
            with Verifier.init(f"sqlite:///{work / 'verifier.db'}", key_file=work / "verifier.key") as v:
                v.import_seed_file(seed_file, key=protection.key)
                v.add_user("alice", "correct horse 7")
                linked = v.link("alice", record.serial, codes[1])
                console.print(f"  alice links token {record.serial} with the code on its screen: {linked.reason}")
                code = _press(tok, "press 3: alice's next code")
                console.print(f"  decoded from the OLED: [bold]{code}[/bold]")
                login = v.verify("alice", "correct horse 7" + (code or ""))
                again = v.verify("alice", "correct horse 7" + (code or ""))
                console.print(f"  login 'password+code' in one field: {'accepted' if login else 'refused'}")
                console.print(f"  the same code again (replay): {'accepted' if again else 'refused'}")
                ok &= bool(login) and not again

            # Factory reset needs the button held through a 5 s countdown (physical presence), then
            # time mode.
            console.rule("factory reset (button held 5 s), then time mode (TOTP, RFC 6238)")
            with ThreadPoolExecutor(1) as pool, TokenClient(tok.port) as client:
                pending = pool.submit(client.reset)
                deadline = time.monotonic() + 10
                while "Reset over USB:" not in text_lines(tok.screen()):
                    if time.monotonic() > deadline:
                        raise SystemExit("the token did not ask for the button")
                    time.sleep(0.05)
                _show(tok, "the token asks for physical presence")
                tok.hold()
                pending.result(timeout=60)
                tok.release()
            tok.wait_idle()
            _show(tok, "after the reset")
            tok.set_clock(time.time())  # the DS3231 on its coin cell; SETTIME sets it again
            record, _ = _provision(tok, work / "seeds", protection, mode="totp")
            totp = pyotp.TOTP(base64.b32encode(record.secret).decode())
            for _ in range(3):  # a press that straddles a step boundary is taken again
                before = tok.clock()[0]
                shown = _press(tok, "TOTP code with its countdown bar")
                if int(tok.clock()[0]) // 30 == int(before) // 30:
                    break
            ok &= _verdict(shown, totp.at(int(before)))
            time.sleep(2.2)
            console.print(f"  two seconds later the countdown bar is at {tok.screen().bar():.0%} of its width")
            tok.power_off()
        verdict = "all codes match" if ok else "MISMATCH"
        console.rule(f"done in {time.monotonic() - started:.1f} s: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
