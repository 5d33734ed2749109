"""`keyfob sim run`: the virtual token driven by a person from the keyboard."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from keyfob.cli import main

pytestmark = pytest.mark.timeout(180)


def test_sim_run_keyboard_session(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYFOB_SIM_REGISTRY", str(tmp_path / "registry"))
    png = tmp_path / "screen.png"
    keys = ["p", "l", "clock 1234567890 40", "osf", "cut", "on", "s", f"png {png}", "bogus", "q"]
    result = CliRunner().invoke(main, ["sim", "run", "--workdir", str(tmp_path / "sim")], input="\n".join(keys) + "\n")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "virtual token on /dev/pts/" in out
    assert out.count("text: Not / provisioned") == 2  # a fresh token says so on a press and a long press
    assert "text: keyfob / ds3231 ok / oled ok" in out  # the boot scan after powering on again
    assert "DS3231 set to 1234567890 (+40 ppm)" in out
    assert "power cut" in out and "powered on" in out
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "commands (then Enter)" in out  # an unknown command shows the help
