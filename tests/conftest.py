"""Fixtures shared by the virtual-token tests.

The firmware is compiled once per test process and deployed once, with mpremote, onto a
"golden" virtual flash; each test then gets its own copy of that flash, as if it took a
freshly flashed token out of the box.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from keyfob import build
from keyfob.sim import VirtualToken
from keyfob.sim.devtools import dev_provision  # noqa: F401  (re-exported for the tests)
from oracles import b32  # noqa: F401  (re-exported for the tests)


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
