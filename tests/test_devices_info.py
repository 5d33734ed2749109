"""`keyfob devices` asks each device for INFO: a provisioned virtual token shows its serial,
mode and lock state; a port where nothing answers shows as a board without keyfob firmware."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from keyfob.cli import main
from keyfob.device import ports
from test_usb_provisioning import new_record, open_client

pytestmark = pytest.mark.timeout(120)


def test_devices_shows_info_of_tokens_and_dash_for_silent_ports(make_token, tmp_path, monkeypatch):
    monkeypatch.setenv("KEYFOB_SIM_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setattr("serial.tools.list_ports.comports", lambda *a, **k: [])
    tok = make_token("t", register=True)
    tok.power_on()
    tok.wait_idle()
    rec = new_record(mode="totp")
    with open_client(tok) as client:
        client.provision(rec)
        client.lock()
    # A second "virtual token" entry whose port answers nothing: a pty nobody reads.
    master, slave = os.openpty()
    silent = ports.register_sim(os.ttyname(slave), os.getpid(), tmp_path)
    try:
        result = CliRunner().invoke(main, ["devices", "--json"])
        assert result.exit_code == 0, result.output
        by_port = {d["port"]: d for d in json.loads(result.output)}
        info = by_port[tok.port]["info"]
        assert (info["serial"], info["mode"], info["provisioned"], info["locked"]) == (rec.serial, "totp", True, True)
        assert info["board"] == "sim"
        assert "seed" not in info and "secret" not in info
        assert by_port[os.ttyname(slave)]["info"] is None
        table = CliRunner().invoke(main, ["devices"]).output
        assert rec.serial in table and "locked" in table
    finally:
        ports.unregister_sim(silent)
        os.close(master)
        os.close(slave)
