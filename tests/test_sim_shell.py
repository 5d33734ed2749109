"""The virtual token driven from a shell, as a user's own integration tests would (issue 9,
point 3): ``keyfob sim start|press|hold|release|screen|power|stop`` on both tiers, and a bare
emulated Pico made into a provisioned token with nothing but commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pskc
import pyotp
import pytest
from conftest import on_both_tiers
from oracles import b32

pytestmark = pytest.mark.timeout(300)

BIN = Path(sys.executable).parent


def run(*args: str, timeout: float = 180, ok: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout)
    if ok:
        assert out.returncode == 0, f"{args}: {out.stdout}{out.stderr}"
    return out


def repl_answers(port: str) -> bool:
    """Stock mpremote runs code on the port (False: it got no REPL within 15 s)."""
    try:
        out = run("mpremote", "connect", port, "exec", "print(6 * 7)", timeout=15, ok=False)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and out.stdout.strip() == "42"


@on_both_tiers
def test_start_drive_and_stop_from_the_shell(tmp_path, tier):
    wd = str(tmp_path / "tok")
    state = json.loads(run("keyfob", "sim", "start", "--board", tier, "--workdir", wd, "--json").stdout)
    try:
        assert set(state) == {"board", "port", "drive", "workdir"} and state["board"] == tier
        assert state["drive"] is None
        again = run("keyfob", "sim", "start", "--board", tier, "--workdir", wd, ok=False)
        assert again.returncode != 0 and "already running" in again.stderr
        run("keyfob", "deploy", "--port", state["port"], "--board", "rp2040" if tier == "pico" else "sim")
        assert run("keyfob", "sim", "press", "--workdir", wd).stdout.strip().endswith("text: Not / provisioned")
        run("keyfob", "sim", "hold", "--workdir", wd)
        run("keyfob", "sim", "release", "--workdir", wd)  # a long press: the (empty) serial screen
        run("keyfob", "sim", "press", "--workdir", wd)
        text = run("keyfob", "sim", "screen", "--text", "--workdir", wd).stdout
        assert text.split("\n")[:2] == ["Not", "provisioned"]
        assert run("keyfob", "sim", "screen", "--code", "--workdir", wd, ok=False).returncode == 1
        png = tmp_path / "screen.png"
        run("keyfob", "sim", "screen", "--png", str(png), "--workdir", wd)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        run("keyfob", "sim", "power", "off", "--workdir", wd)
        run("keyfob", "sim", "power", "on", "--workdir", wd)
        assert json.loads((tmp_path / "tok" / "sim.json").read_text())["port"] == state["port"]
        assert repl_answers(state["port"])  # an unprovisioned token's console is open
    finally:
        run("keyfob", "sim", "stop", "--workdir", wd, ok=False)
    assert not (tmp_path / "tok" / "sim.json").exists()
    gone = run("keyfob", "sim", "press", "--workdir", wd, ok=False)
    assert gone.returncode == 3 and "no virtual token is running" in gone.stderr  # unavailable


@pytest.mark.parametrize("tier", ["pico"], indirect=True)
def test_a_bare_pico_becomes_a_token_with_nothing_but_commands(tmp_path, tier):
    from keyfob.sim.pico import find_inputs

    wd = str(tmp_path / "pico")
    state = json.loads(run("keyfob", "sim", "start", "--board", "pico", "--bare", "--workdir", wd, "--json").stdout)
    port, drive = state["port"], state["drive"]
    try:
        assert drive and (Path(drive) / "INFO_UF2.TXT").is_file()
        run("keyfob", "flash", "--board", "rp2040", "--drive", drive, "--image", str(find_inputs().uf2))
        impl = run("mpremote", "connect", port, "exec", "import sys; print(sys.implementation)").stdout
        assert "Raspberry Pi Pico with RP2040" in impl
        run("keyfob", "deploy", "--port", port, "--board", "rp2040")
        out = tmp_path / "out"
        run("keyfob", "provision", "--port", port, "--out", str(out), "--plain")
        [seed_file] = out.glob("*.pskc")
        seed = pskc.PSKC(str(seed_file)).keys[0].secret
        want = pyotp.HOTP(b32(seed))
        for counter in range(2):
            run("keyfob", "sim", "press", "--workdir", wd)
            assert run("keyfob", "sim", "screen", "--code", "--workdir", wd).stdout.strip() == want.at(counter)
        assert json.loads((tmp_path / "pico" / "sim.json").read_text())["port"] == port
        assert not repl_answers(port)  # locked: stock mpremote gets no REPL
    finally:
        run("keyfob", "sim", "stop", "--workdir", wd, ok=False)
