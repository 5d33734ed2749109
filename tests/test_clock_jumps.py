"""Issue 10 point 3: the clock of a locked TOTP token cannot be moved where a thief wants it.

Written the way someone holding the token and a USB cable would try it, on both tiers of the
virtual token (the Pico's single-precision floats do the drift arithmetic there), with
codes read off the emulated OLED and pyotp as the oracle:

- harvesting: SETTIME to +1 h ... +1 year on a locked token, a press after each; no code shown may be
  pyotp's code for any of those future times, and the clock is still right afterwards;
- creeping: 20 SETTIMEs each a second or two ahead of the token, as fast as the port takes them;
- poisoning: one SETTIME 86 s off two days after the last sync must not change the learned drift;
- an honest monthly sync of a DS3231 running 3 ppm fast still learns its drift;
- a clock that is known lost (the DS3231's oscillator-stop flag) may be set anywhere, and that jump
  is counted in INFO and in `keyfob devices`.

Days "pass" by setting the emulated DS3231 to what it would show then (its reading plus the days
times its rate); true time is what an honest host would say (test_usb_provisioning.py does the same).
"""

from __future__ import annotations

import json
import time

import pyotp
import pytest
from click.testing import CliRunner
from conftest import on_both_tiers
from keyfob.cli import main
from keyfob.device.client import Refused
from oracles import b32
from test_usb_provisioning import new_record, open_client, press_code

pytestmark = [pytest.mark.timeout(300), on_both_tiers]

DAY = 86400
T0 = 1_767_225_615  # 2026-01-01 00:00:15 UTC
FUTURE = [h * 3600 for h in (1, 2, 3, 6, 12)] + [
    d * DAY for d in (1, 2, 3, 4, 5, 6, 7, 10, 14, 21, 30, 45, 60, 90, 120, 180, 240, 300, 365)
]
assert len(FUTURE) == 24


class Timeline:
    """True time for a token whose DS3231 runs at `ppm`: T0 at the first sync, plus real seconds
    since, plus the days skipped with :meth:`skip`."""

    def __init__(self, tok, ppm: float = 0.0):
        self.tok = tok
        self.ppm = ppm
        self.h0 = time.monotonic()
        self.skipped = 0.0

    def now(self) -> float:
        return T0 + (time.monotonic() - self.h0) + self.skipped

    def skip(self, seconds: float) -> None:
        chip, _, _ = self.tok.clock()
        self.tok.set_clock(chip + seconds * (1 + self.ppm / 1e6), ppm=self.ppm)
        self.skipped += seconds


def _locked_totp(make_token, name="tok", ppm=0.0):
    rec = new_record(mode="totp")
    tok = make_token(name)
    tok.set_clock(T0 - 20, ppm=ppm)
    tok.power_on()
    with open_client(tok) as client:
        client.provision(rec)
        line = Timeline(tok, ppm)
        client.settime(now=T0)
        client.lock()
        assert client.info().locked
    return tok, rec, line


def _codes_around(totp: pyotp.TOTP, t: float) -> set[str]:
    return {totp.at(int(t) + d) for d in (-30, 0, 30)}


def test_harvesting_future_codes_from_a_locked_token_yields_none(make_token):
    tok, rec, line = _locked_totp(make_token)
    totp = pyotp.TOTP(b32(rec.secret))
    future_codes: dict[int, set[str]] = {}
    shown = []
    with open_client(tok) as client:
        for ahead in FUTURE:
            target = line.now() + ahead
            future_codes[ahead] = _codes_around(totp, target)
            try:
                client.settime(now=target)
            except Refused as exc:
                assert exc.reason == "jump", exc
            shown.append((ahead, press_code(tok), line.now()))
        # ... and the thief puts the clock back to hide it: nothing to put back.
        try:
            client.settime(now=line.now())
        except Refused:
            pass
        info = client.info()
    for ahead, code, t_press in shown:
        assert code is not None
        for other in FUTURE:
            assert code not in future_codes[other], f"a press after SETTIME +{ahead} s showed the code of +{other} s"
        assert code in _codes_around(totp, t_press)  # what it shows is the code of now
    assert abs(info.time - line.now()) <= 3
    assert info.jumps == 0


def test_creeping_a_second_at_a_time_moves_the_clock_nowhere(make_token):
    tok, rec, line = _locked_totp(make_token)
    with open_client(tok) as client:
        for _ in range(20):  # 40 s in all: eight times the allowance
            ahead = client.info().time + 2  # always just ahead of the token itself
            try:
                client.settime(now=ahead)
            except Refused as exc:
                assert exc.reason == "jump", exc
        info = client.info()
    assert abs(info.time - line.now()) <= 3, info.time - line.now()
    assert info.jumps == 0


def test_one_settime_86s_off_two_days_later_does_not_poison_the_drift(make_token):
    tok, rec, line = _locked_totp(make_token)
    with open_client(tok) as client:
        before = client.info()
        line.skip(2 * DAY)
        with pytest.raises(Refused) as exc:
            client.settime(now=line.now() + 86)
        assert exc.value.reason == "jump"
        after = client.info()
        assert after.drift_ppb == before.drift_ppb == 0
        assert after.synced_at == before.synced_at
        # A week later the code is still right (the poisoned token was 10 steps off by then).
        line.skip(7 * DAY)
        want = pyotp.TOTP(b32(rec.secret))
        for _attempt in range(3):
            t0 = line.now()
            code = press_code(tok)
            if int(t0) // 30 == int(line.now()) // 30:
                break
        assert code == want.at(int(line.now()))
        assert abs(client.info().time - line.now()) <= 3


def test_honest_monthly_sync_learns_a_real_3ppm_drift(make_token):
    tok, rec, line = _locked_totp(make_token, ppm=3.0)
    with open_client(tok) as client:
        line.skip(30 * DAY)
        sync = client.settime(now=line.now())
        assert sync.learned and abs(sync.elapsed - 30 * DAY) <= 3
        assert 2_500 <= sync.drift_ppb <= 3_500, sync.drift_ppb
        info = client.info()
        assert info.drift_ppb == sync.drift_ppb and info.jumps == 0


def test_a_lost_clock_may_be_set_and_the_jump_is_counted(make_token, tmp_path, monkeypatch):
    monkeypatch.setenv("KEYFOB_SIM_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setattr("serial.tools.list_ports.comports", lambda *a, **k: [])
    rec = new_record(mode="totp")
    tok = make_token("osf", register=True)
    tok.set_clock(T0 - 20)
    tok.power_on()
    with open_client(tok) as client:
        client.provision(rec)
        client.settime(now=T0)
        client.lock()
        # The coin cell went flat: the DS3231 says its oscillator stopped.
        tok.set_clock(T0 - 5000, osf=True)
        assert client.info().time is None
        sync = client.settime(now=T0 + 3600)
        assert sync.offset is None and sync.jump
        info = client.info()
        assert info.jumps == 1 and abs(info.time - (T0 + 3600)) <= 3
    listed = json.loads(CliRunner().invoke(main, ["devices", "--json"]).output)
    (entry,) = [d for d in listed if d["port"] == tok.port]
    assert entry["info"]["jumps"] == 1
    table = CliRunner().invoke(main, ["devices"], env={"COLUMNS": "250"}).output
    assert "Jumps" in table
