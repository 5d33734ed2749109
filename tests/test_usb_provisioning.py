"""Issue 4 acceptance on the virtual token: provisioning over the USB protocol, through the real pty.

Each test takes a freshly deployed virtual token (tests/conftest.py), talks to it with
:class:`keyfob.device.client.TokenClient` over pyserial on the token's pty, and reads the result
off the emulated OLED, the emulated DS3231 and the virtual flash image. Expected codes come from
pyotp, the key check value from the stdlib ``hmac``: nothing here reuses the firmware's own code.

Covered: PROVISION -> LOCK -> press (codes, INFO, key check value); RESET with and without the
button, PROVISION on a provisioned token, the power-up factory reset (held and cancelled);
drift learned from two SETTIMEs a month apart on a +4 ppm DS3231 and a TOTP code four months later;
every kind of bad frame answered with an error frame and changing nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import subprocess
import sys
import threading
import time

import pyotp
import pytest
import serial
from conftest import on_both_tiers
from keyfob.device import frames
from keyfob.device.client import RESET_TIMEOUT, Refused, TokenClient
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.sim.textread import text_lines
from oracles import b32
from oracles import kcv as kcv_of

pytestmark = pytest.mark.timeout(240)

DAY = 86400
T0 = 1_767_225_615  # 2026-01-01 00:00:15 UTC: 15 s into a 30 s step


# --- helpers shared with test_lock_security.py ------------------------------------------------------


def new_record(
    mode: str = "hotp", algorithm: str = "sha1", digits: int = 6, period: int = 30, counter: int = 0
) -> TokenRecord:
    """A token record with a fresh seed (20 bytes for SHA1, 32 for SHA256) and a fresh serial."""
    seed = secrets.token_bytes(32 if algorithm == "sha256" else 20)
    return TokenRecord(
        serial=make_serial(secrets.randbelow(10**8)),
        mode=mode,
        algorithm=algorithm,
        digits=digits,
        secret=seed,
        counter=counter,
        period=period,
    )


def tap(tok) -> bytearray:
    """Record every byte the token's firmware writes to its USB port from now on (the pty bridge's
    output path, whoever reads the port: our client, mpremote, nobody)."""
    out = bytearray()
    owner = getattr(tok, "_bridge", tok)  # the unix tier's pty bridge, or the PicoToken itself
    name = "_host_out" if owner is not tok else "_to_host"
    forward = getattr(owner, name)

    def record(data: bytes) -> None:
        out.extend(data)
        forward(data)

    setattr(owner, name, record)
    return out


def seed_forms(seed: bytes) -> dict[str, bytes]:
    """The seed as it could leak: raw, hex (both cases), base32 (with and without padding)."""
    b32text = base64.b32encode(seed)
    return {
        "raw": seed,
        "hex": seed.hex().encode(),
        "HEX": seed.hex().upper().encode(),
        "base32": b32text,
        "base32-nopad": b32text.rstrip(b"="),
        "base32-lower": b32text.lower(),
    }


def leaks(data: bytes, seed: bytes) -> list[str]:
    """Names of the seed's forms found in `data` (names only: a failing assert must not print
    the seed)."""
    return [name for name, form in seed_forms(seed).items() if form in data]


def open_client(tok, timeout: float = 5.0) -> TokenClient:
    return TokenClient(
        serial.Serial(tok.port, 115200, timeout=0.05),
        timeout=timeout * tok.patience,
        reset_timeout=RESET_TIMEOUT * tok.patience,
    )


def mpremote(port: str, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess | None:
    """Run stock mpremote against the port; None when it had to be killed at `timeout`."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", port, *args], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None


def press_code(tok) -> str | None:
    tok.press(timeout=10 * tok.patience)  # a token may still be chewing on what the host sent
    tok.wait_idle(10 * tok.patience)
    return tok.screen().digits()


def screen_text(tok) -> list[str]:
    return text_lines(tok.screen())


USB_RESET_SCREEN = ["Reset over USB:", "hold 5 s to", "WIPE the token", "tap: cancel"]


def reset_in_background(client: TokenClient) -> tuple[threading.Thread, dict]:
    """client.reset() in a thread (it blocks until the button is held); -> (thread, result), the
    result with every progress report the client saw ("progress") and, once reset() returned,
    how many there were at that moment ("seen_at_return")."""
    result: dict = {"progress": []}

    def run() -> None:
        try:
            client.reset(progress=result["progress"].append)
            result["seen_at_return"] = len(result["progress"])
            result["ok"] = True
        except Exception as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, result


def wait_for_reset_prompt(tok, timeout: float = 10.0) -> list[str]:
    """Wait until the token asks about a reset (whatever its words); -> the lines it shows."""
    deadline = time.monotonic() + timeout * tok.patience
    outcomes = (["Reset", "cancelled"], ["Reset", "refused"])  # a previous request's answer
    while not any("reset" in line.lower() for line in screen_text(tok)) or screen_text(tok) in outcomes:
        assert time.monotonic() < deadline, screen_text(tok)
        time.sleep(0.05)
    return screen_text(tok)


def wait_for_screen(tok, lines: list[str], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout * tok.patience
    while screen_text(tok) != lines:
        assert time.monotonic() < deadline, f"screen never showed {lines}: {screen_text(tok)}"
        time.sleep(0.05)


# --- 1. provision, lock, press -------------------------------------------------------------------------


@on_both_tiers
def test_provision_lock_press_shows_pyotp_codes(make_token):
    hotp = new_record(counter=secrets.randbelow(1000))
    totp = new_record(mode="totp", algorithm="sha256", digits=8, period=60)
    a, b = make_token("hotp"), make_token("totp")
    a.power_on()
    b.power_on()
    for tok, rec in ((a, hotp), (b, totp)):
        with open_client(tok) as client:
            before = client.info()
            assert not before.provisioned and not before.locked and before.serial == ""
            kcv = client.provision(rec)  # compares with keyfob.otp itself; we check independently too
            assert hmac.compare_digest(kcv, kcv_of(rec.secret, rec.algorithm))
            # Letters a..p: never one of the token's decimal codes, for any counter.
            assert not kcv.isdigit()
            codes = {
                pyotp.HOTP(b32(rec.secret), digits=rec.digits, digest=getattr(hashlib, rec.algorithm)).at(c)
                for c in range(10_001)
            }
            assert kcv not in codes
            if rec.mode == "totp":
                client.settime(now=T0)
            client.lock()
            info = client.info()
            assert (info.serial, info.mode, info.algorithm, info.digits, info.period) == (
                rec.serial,
                rec.mode,
                rec.algorithm,
                rec.digits,
                rec.period,
            )
            assert info.provisioned and info.locked and info.board == tok.deploy_board
            assert info.counter == rec.counter
            assert text_lines(tok.screen()) == ["Locked"]

    want = pyotp.HOTP(b32(hotp.secret))
    for i in range(3):
        assert press_code(a) == want.at(hotp.counter + i)
    with open_client(a) as client:
        assert client.info().counter == hotp.counter + 3

    # TOTP: the DS3231 was set by SETTIME; press within one step (retried at a step boundary).
    want = pyotp.TOTP(b32(totp.secret), digits=8, digest=hashlib.sha256, interval=60)
    for _attempt in range(3):
        t_before = b.clock()[0]
        shown = press_code(b)
        t_after = b.clock()[0]
        if int(t_before) // 60 == int(t_after) // 60:
            break
    assert shown == want.at(int(t_after))
    assert abs(t_after - T0) < 60  # SETTIME set the chip (it started at the epoch, OSF set)


# --- 3. reset needs the button; provision needs a reset ----------------------------------------------


@on_both_tiers
def test_reset_refused_without_button_then_wipes_with_it(make_token):
    rec = new_record()
    tok = make_token()
    tok.power_on()
    with open_client(tok) as client:
        client.provision(rec)
        client.lock()
        assert press_code(tok) == pyotp.HOTP(b32(rec.secret)).at(0)
        info = client.info()
        image = tok.flash_path.read_bytes()
        assert "raw" in leaks(image, rec.secret)  # on the flash (so "gone" below means something)

        # PROVISION on a provisioned token: refused, nothing changes.
        with pytest.raises(Refused) as exc:
            client.provision(new_record())
        assert exc.value.reason == "provisioned"

        # RESET without the button: the token says what the button will do, waits 10 s, refuses.
        th, result = reset_in_background(client)
        wait_for_screen(tok, USB_RESET_SCREEN)
        th.join(20)
        assert isinstance(result.get("error"), Refused) and result["error"].reason == "presence"
        assert screen_text(tok) == ["Reset", "refused"]
        assert client.info() == info
        assert tok.flash_path.read_bytes() == image
        assert press_code(tok) == pyotp.HOTP(b32(rec.secret)).at(1)
        image = tok.flash_path.read_bytes()

        # RESET with the button held through the countdown: wiped.
        th, result = reset_in_background(client)
        wait_for_screen(tok, USB_RESET_SCREEN)
        tok.hold()
        # The owner lets go once the token says it is done; the held finger is no new press.
        wait_for_screen(tok, ["Token", "wiped"], timeout=60)
        tok.release()
        th.join(60)
        assert result.get("ok"), result
        steps = [p.step for p in result["progress"]]
        assert steps[0] == "wait" and "hold" in steps and "scrub" in steps
        after = steps[len(steps) - steps[::-1].index("scrub") :]
        assert set(after) <= {"release"}  # after the scrub, only waiting for the finger to lift
        holds = [p.done for p in result["progress"] if p.step == "hold"]
        assert holds == [0, 1, 2, 3, 4, 5]  # one report a second of the countdown, then held
        last = [p for p in result["progress"] if p.step == "scrub"][-1]
        assert last.done == last.total > 100_000  # the free flash, zeroed, reported to the end
        info = client.info()
        assert not info.provisioned and not info.locked and info.serial == ""
        assert screen_text(tok) == ["Token", "wiped"]

    # The seed is gone from the virtual flash, LittleFS's old copies included.
    assert leaks(tok.flash_path.read_bytes(), rec.secret) == []
    # The REPL is open again.
    run = mpremote(tok.port, "exec", "print(1+1)")
    assert run is not None and run.returncode == 0 and run.stdout.split() == ["2"], run


@on_both_tiers
def test_owners_2_s_press_while_a_usb_reset_waits_does_not_wipe(make_token):
    """Issue 10 point 4: someone with the USB cable asks for a RESET; the owner, seeing the screen
    light up, does what they always do: the 2 s press that shows the serial. Nothing is wiped; a
    tap cancels too. Only a hold through the 5 s countdown wipes."""
    rec = new_record()
    tok = make_token()
    tok.power_on()
    with open_client(tok) as client:
        client.provision(rec)
        client.lock()
        info = client.info()
        image = tok.flash_path.read_bytes()
        for ms in (2000, 100):  # the serial-screen press, then a tap
            th, result = reset_in_background(client)
            prompt = wait_for_reset_prompt(tok)
            tok.press(ms)
            th.join(30)
            assert client.info() == info, ms  # not wiped
            assert tok.flash_path.read_bytes() == image
            assert isinstance(result.get("error"), Refused), (ms, result)
            assert result["error"].reason == "cancelled", ms
            assert screen_text(tok) == ["Reset", "cancelled"]
            assert prompt == USB_RESET_SCREEN  # it said what the button would do
        # The countdown the owner saw started at 5 s: the 2 s press got to 4 or 3, not 0.
        assert [p.done for p in result["progress"] if p.step == "hold"][:1] == [0]
    assert press_code(tok) == pyotp.HOTP(b32(rec.secret)).at(0)
    run = mpremote(tok.port, "exec", "print(1+1)", timeout=12)
    assert run is None or run.returncode != 0 or run.stdout.split() != ["2"]  # still locked


def _keyfob_reset(port: str) -> tuple[threading.Thread, dict]:
    """`keyfob reset --port PORT` (the click command, in a thread); -> (thread, {"r": Result})."""
    from click.testing import CliRunner
    from keyfob.cli import main

    done: dict = {}
    th = threading.Thread(
        target=lambda: done.setdefault("r", CliRunner().invoke(main, ["reset", "--port", port])), daemon=True
    )
    th.start()
    return th, done


@on_both_tiers
def test_keyfob_reset_follows_the_scrub_and_says_done_only_at_its_end(make_token):
    """Issue 10 point 5: `keyfob reset` waits as long as the token reports progress (the scrub of a
    1 MiB flash here) and says done only after the token's final reply says the scrub completed."""
    rec = new_record()
    tok = make_token()
    tok.power_on()
    with open_client(tok) as client:
        client.provision(rec)
        client.lock()
    wire = tap(tok)
    th, done = _keyfob_reset(tok.port)
    prompt = wait_for_reset_prompt(tok)
    tok.hold()
    th.join(120)
    tok.release()
    out, err = done["r"].stdout, done["r"].stderr
    assert done["r"].exit_code == 0, err
    assert prompt == USB_RESET_SCREEN
    assert "flash scrub complete" in out
    got = [f for f in frames.Decoder().feed(bytes(wire)) if f.error is None]
    kinds = [(f.type, frames.decode_payload(f)) for f in got]
    scrub = [o for t, o in kinds if t == frames.PROGRESS and o["step"] == "scrub"]
    assert len(scrub) > 100 and scrub[-1]["done"] == scrub[-1]["total"]  # a report per block
    assert kinds[-1] == (frames.OK, {"re": frames.RESET, "reset": True, "scrubbed": True})
    assert leaks(tok.flash_path.read_bytes(), rec.secret) == []

    # Let go early: one clear message, a non-zero exit, nothing wiped.
    with open_client(tok) as client:
        client.provision(rec)
        client.lock()
        info = client.info()
    th, done = _keyfob_reset(tok.port)
    wait_for_reset_prompt(tok)
    tok.press(2000)
    th.join(60)
    out, err = done["r"].stdout, done["r"].stderr
    assert done["r"].exit_code != 0 and "wiped" not in out
    assert "let go before the countdown ended: nothing was reset" in err
    with open_client(tok) as client:
        assert client.info() == info


def _provisioned_token(make_token, name: str, rec: TokenRecord):
    tok = make_token(name)
    tok.power_on()
    with open_client(tok) as client:
        client.provision(rec)
        client.lock()
        info = client.info()
    tok.power_off()
    return tok, info


@on_both_tiers
def test_power_up_hold_offers_factory_reset(make_token):
    # hold_ms: the button is down from power-up for that long, then lets go by itself
    # (the firmware polls the pin then).
    rec = new_record()
    tok, _ = _provisioned_token(make_token, "held", rec)
    assert "raw" in leaks(tok.flash_path.read_bytes(), rec.secret)
    # Held for 8 s: 1 s to count as held at boot, then 5 s more to confirm.
    tok.power_on(hold_ms=8000)
    tok.wait_idle(20 * tok.patience)  # idle again once the button is up
    assert screen_text(tok) == ["Token", "wiped"]
    with open_client(tok) as client:
        info = client.info()
    assert not info.provisioned and not info.locked
    assert leaks(tok.flash_path.read_bytes(), rec.secret) == []

    # Let go after 2.5 s (held at boot, but not for the 5 s more): cancelled, token unchanged.
    rec = new_record()
    tok, info = _provisioned_token(make_token, "early", rec)
    image = tok.flash_path.read_bytes()
    tok.power_on(hold_ms=2500)
    tok.wait_idle(20 * tok.patience)
    assert screen_text(tok) == ["Reset", "cancelled"]
    with open_client(tok) as client:
        assert client.info() == info
    assert tok.flash_path.read_bytes() == image
    assert press_code(tok) == pyotp.HOTP(b32(rec.secret)).at(0)


# --- 4. drift learning on a +40 ppm DS3231 ---------------------------------------------------------------


@on_both_tiers
def test_two_syncs_learn_4ppm_and_totp_is_right_four_months_later(make_token):
    """The DS3231 runs 4 ppm fast (a DS3231M may, within its +-5 ppm). Days "pass" by setting the
    chip to what it would show then: its reading now plus the days times (1 + 4e-6). True time is
    what the host says: T0 at the first sync, plus real seconds since, plus the days skipped."""
    ppm = 4.0
    rate = 1 + ppm / 1e6
    rec = new_record(mode="totp")
    tok = make_token()
    tok.set_clock(T0 - 3600, ppm=ppm)  # the chip starts an hour behind
    set_at = time.monotonic()
    tok.power_on()
    with open_client(tok) as client:
        client.provision(rec)
        h1 = time.monotonic()
        skipped = 0.0

        def true_now() -> float:
            return T0 + (time.monotonic() - h1) + skipped

        def skip(seconds: float) -> None:
            nonlocal skipped
            chip, _, _ = tok.clock()
            tok.set_clock(chip + seconds * rate, ppm=ppm)
            skipped += seconds

        first = client.settime(now=T0)  # as `keyfob provision` does: sync, then lock
        assert first.elapsed is None and not first.learned and first.drift_ppb == 0
        # the chip ran on from T0 - 3600 while the token booted and took the record
        assert -3600 <= first.offset <= -3600 + (time.monotonic() - set_at) + 1
        client.lock()

        # Sync 2 a month later, on the locked token. The firmware measures whole seconds: the
        # offset it finds (~ +10.4 s) is good to about 1 s, so a month gives +-0.4 ppm.
        skip(30 * DAY)
        second = client.settime(now=true_now())
        assert second.learned and second.set and abs(second.elapsed - 30 * DAY) <= 2
        assert abs(second.offset - 30 * DAY * ppm / 1e6) <= 1.5
        info = client.info()
        assert abs(info.drift_ppb - 4_000) <= 600, info.drift_ppb
        assert info.drift_ppb == second.drift_ppb and info.locked and info.jumps == 0

        # Four months without a sync (~41 s of drift), landing true time in the middle of a step.
        months = 120 * DAY
        target = (int(true_now() + months) // 30 + 1) * 30 + 15
        skip(target - true_now())
        raw_chip = tok.clock()[0]
        shown = press_code(tok)
        t_true = true_now()
        assert int(t_true) // 30 == target // 30  # pressed within the step aimed at
        assert raw_chip - t_true > 35  # the chip itself is more than a step off ...
        want = pyotp.TOTP(b32(rec.secret))
        assert shown == want.at(int(t_true))  # ... the code shown is right
        assert shown != want.at(int(raw_chip))
        assert abs(client.info().time - t_true) <= 8


# --- 5. bad frames ---------------------------------------------------------------------------------------


class Wire:
    """Raw frames on the token's port, and every reply frame that comes back, in order."""

    def __init__(self, ser: serial.Serial) -> None:
        self.ser = ser
        self.dec = frames.Decoder()

    def exchange(self, wire: bytes, wait: float = 3.0) -> list[frames.Frame]:
        """Send raw bytes; return the frames received until the first one (and any already
        behind it). A stray extra reply shows up at the front of the next exchange."""
        self.ser.write(wire)
        self.ser.flush()
        got: list[frames.Frame] = []
        deadline = time.monotonic() + wait
        while not got and time.monotonic() < deadline:
            got += self.dec.feed(self.ser.read(max(1, self.ser.in_waiting)))
        return got

    def error(self, wire: bytes, wait: float = 3.0) -> dict:
        replies = self.exchange(wire, wait)
        assert len(replies) == 1 and replies[0].type == frames.ERROR, replies
        return frames.decode_payload(replies[0])

    def info(self) -> dict:
        replies = self.exchange(frames.encode_frame(frames.INFO))
        assert len(replies) == 1 and replies[0].type == frames.OK, replies
        obj = frames.decode_payload(replies[0])
        obj.pop("time")  # the clock runs on
        return obj


PROVISION_FIELD_CASES: set[str] = set()


def _bad_frames(good_fields: dict) -> list[tuple[str, bytes, str]]:
    """(name, wire bytes, expected reason) for every kind of bad frame."""
    info = frames.encode_raw(frames.INFO, b"")
    cases = [
        ("crc", frames.encode_raw(frames.INFO, b"", crc=0x12345678), "crc"),
        ("crc-payload", frames.encode_raw(frames.SETTIME, b'{"t":1767225600}', crc=0), "crc"),
        ("oversize", frames.MAGIC + frames.escape(bytes([1, frames.INFO, 0x01, 0xF6])), "oversize"),
        ("oversize-max", frames.MAGIC + frames.escape(bytes([1, frames.INFO, 0xFF, 0xFF])), "oversize"),
        ("version", frames.encode_raw(frames.INFO, b"", version=2), "version"),
        ("framing-raw-ctrl", frames.MAGIC + b"\x01\x01\x00", "framing"),
        ("framing-bad-escape", frames.MAGIC + b"\xfd\x41", "framing"),
        ("unknown-type", frames.encode_raw(0x09, b""), "unknown"),
        ("unknown-reply-type", frames.encode_raw(frames.OK, b""), "unknown"),
        ("payload-on-info", frames.encode_raw(frames.INFO, b"{}"), "payload"),
        ("payload-on-lock", frames.encode_raw(frames.LOCK, b"x"), "payload"),
        ("payload-not-json", frames.encode_raw(frames.PROVISION, b"{seed"), "payload"),
        ("payload-array", frames.encode_raw(frames.PROVISION, b"[1,2]"), "payload"),
        ("payload-bad-utf8", frames.encode_raw(frames.SETTIME, b'{"t":"\xff"}'), "payload"),
        ("settime-early", frames.encode_json(frames.SETTIME, {"t": 1_000_000_000}), "field"),
        ("settime-string", frames.encode_json(frames.SETTIME, {"t": "1767225600"}), "field"),
        ("settime-float", frames.encode_raw(frames.SETTIME, b'{"t":1767225600.0}'), "field"),
        ("settime-extra", frames.encode_json(frames.SETTIME, {"t": 1_767_225_600, "x": 1}), "field"),
    ]
    bad_fields = {
        "seed-15-bytes": {"seed": secrets.token_hex(15)},
        "seed-65-bytes": {"seed": secrets.token_hex(65)},
        "seed-20-for-sha256": {"algorithm": "sha256"},
        "seed-odd-hex": {"seed": secrets.token_hex(20)[:-1]},
        "seed-not-hex": {"seed": "zz" * 20},
        "seed-bytes-list": {"seed": list(range(20))},
        "digits-5": {"digits": 5},
        "digits-7": {"digits": 7},
        "digits-true": {"digits": True},
        "digits-6.0": {"digits": 6.0},
        "period-45": {"period": 45},
        "mode": {"mode": "motp"},
        "algorithm": {"algorithm": "md5"},
        "serial-check-digit": {"serial": good_fields["serial"][:-1] + str((int(good_fields["serial"][-1]) + 1) % 10)},
        "serial-lower": {"serial": good_fields["serial"].lower()},
        "counter-negative": {"counter": -1},
        "counter-2**64-1": {"counter": 2**64 - 1},
        "counter-string": {"counter": "0"},
        "missing-field": {"counter": None},
        "extra-field": {"label": "x"},
    }
    PROVISION_FIELD_CASES.update(bad_fields)
    for name, change in bad_fields.items():
        fields = dict(good_fields, **change)
        if change.get("counter", 0) is None:
            del fields["counter"]
        cases.append((name, frames.encode_json(frames.PROVISION, fields), "field"))
    # A frame cut off and never finished (the 1 s timeout answers it), then nothing else.
    cases.append(("truncated", info[:6], "truncated"))
    cases.append(("truncated-mid-payload", frames.encode_json(frames.PROVISION, good_fields)[:40], "truncated"))
    return cases


# The frame parser is the same firmware code on both tiers, with nothing of the port in it: the
# unix tier only (the Pico tier's other tests send it good and bad bytes too).
def test_every_bad_frame_gets_an_error_and_changes_nothing(make_token):
    rec = new_record()
    good = {
        "seed": rec.secret.hex(),
        "serial": rec.serial,
        "mode": "hotp",
        "algorithm": "sha1",
        "digits": 6,
        "period": 30,
        "counter": 0,
    }
    fresh, locked = make_token("fresh"), make_token("locked")
    fresh.power_on()
    locked.power_on()
    with open_client(locked) as client:
        client.provision(new_record())
        client.lock()
    for tok in (fresh, locked):
        tok.wait_idle()
        with serial.Serial(tok.port, 115200, timeout=0.05) as ser:
            link = Wire(ser)
            info = link.info()
            image = tok.flash_path.read_bytes()
            cases = _bad_frames(good)
            if info["provisioned"]:
                cases.append(("provision-again", frames.encode_json(frames.PROVISION, good), "provisioned"))
            else:
                cases.append(("lock-unprovisioned", frames.encode_frame(frames.LOCK), "unprovisioned"))
            for name, wire, reason in cases:
                err = link.error(wire)
                if info["provisioned"] and name in PROVISION_FIELD_CASES:
                    # A provisioned token may refuse before it looks at the values.
                    assert err["reason"] in ("field", "provisioned"), (name, err)
                else:
                    assert err["reason"] == reason, (name, err)
                assert isinstance(err["text"], str) and err["text"]
                assert leaks(err["text"].encode(), rec.secret) == []
                assert link.info() == info, name
            assert tok.flash_path.read_bytes() == image
        assert tok.is_running
    # After all that, the fresh token still takes the good record.
    with open_client(fresh) as client:
        client.provision(rec)
        assert client.info().serial == rec.serial
    assert press_code(fresh) == pyotp.HOTP(b32(rec.secret)).at(0)
