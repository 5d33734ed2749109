"""Fixtures shared by the virtual-token tests.

The firmware is compiled once per test process and deployed once, with mpremote, onto a
"golden" virtual flash; each test then gets its own copy of that flash, as if it took a
freshly flashed token out of the box.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
from keyfob import build
from keyfob.sim import VirtualToken


@pytest.fixture(scope="session")
def firmware_files(tmp_path_factory) -> list[tuple[Path, str]]:
    return build.build("sim", tmp_path_factory.mktemp("build"))


@pytest.fixture(scope="session")
def golden_flash(tmp_path_factory, firmware_files) -> Path:
    """A virtual flash with the firmware deployed by mpremote, the way it lands on a board."""
    wd = tmp_path_factory.mktemp("golden")
    with VirtualToken(wd) as tok:
        tok.power_on()
        tok.deploy(firmware_files)
        tok.wait_idle()
        tok.power_off()
    return wd / "flash.img"


@pytest.fixture
def make_token(tmp_path, golden_flash):
    """Factory: make_token(name='tok', **kw) -> a VirtualToken on a copy of the golden flash
    (not powered on yet). All are shut down at the end of the test."""
    made: list[VirtualToken] = []

    def make(name: str = "tok", **kw) -> VirtualToken:
        tok = VirtualToken(tmp_path / name, image=golden_flash, **kw)
        made.append(tok)
        return tok

    yield make
    for tok in made:
        tok.close()


def dev_provision(tok: VirtualToken, seed: bytes, serial: str = "KF000123459", mode: str = "hotp",
                  algorithm: str = "sha1", digits: int = 6, period: int = 30, counter: int = 0) -> None:
    """The development path: write the store through the (unlocked) raw REPL with mpremote,
    then soft-reset so the firmware starts provisioned. USB provisioning has its own tests."""
    code = (
        "import store; s = store.Store(); "
        f"s.provision({seed!r}, {serial!r}, {mode!r}, {algorithm!r}, {digits}, {period}, {counter})"
    )
    run = subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", tok.port, "exec", code],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    tok.soft_reset()
    tok.wait_idle()


def b32(seed: bytes) -> str:
    return base64.b32encode(seed).decode()
