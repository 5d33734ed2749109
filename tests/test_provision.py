"""Provisioning from the host, end to end on virtual tokens: deploy (with hash verification),
provision -> lock -> press, batches of virtual tokens, seed files the verifier imports, refusals.

Codes on the token's screen are checked against pyotp and the key check value against an HMAC
computed here with the standard library, never against keyfob's own OTP code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyotp
import pytest
from click.testing import CliRunner
from conftest import dev_provision
from keyfob import deploy as fwdeploy
from keyfob import provision as prov
from keyfob.cli import main
from keyfob.device import frames
from keyfob.device.client import TokenClient
from keyfob.formats import read_seed_file, write_pskc
from keyfob.serials import is_valid_serial, make_serial
from keyfob.sim import VirtualToken
from keyfob.sim.textread import text_lines
from oracles import b32
from oracles import kcv as kcv_here

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    # Never pick up other running virtual tokens, the real ~/.config, or a real verifier.
    monkeypatch.setenv("KEYFOB_SIM_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("KEYFOB_ARGON2_PROFILE", "fast")
    for name in ("KEYFOB_TRANSPORT_KEY_FILE", "KEYFOB_KEY", "KEYFOB_KEY_FILE", "KEYFOB_DB"):
        monkeypatch.delenv(name, raising=False)


def cli(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def spellings(seed: bytes) -> list[str]:
    return [seed.hex(), seed.hex().upper(), b32(seed).rstrip("="), base64.b64encode(seed).decode()]


def assert_no_seed(text: str | bytes, seed: bytes) -> None:
    blob = text.encode() if isinstance(text, str) else text
    assert seed not in blob
    for s in spellings(seed):
        assert s.encode() not in blob


def one_line_error(r) -> str:
    assert r.exit_code != 0, r.output
    err = r.stderr.strip()
    assert "\n" not in err and "Traceback" not in r.output, r.output
    return err


def manifest_of(out: Path) -> dict:
    (path,) = out.glob("*.manifest.json")
    return json.loads(path.read_text())


def info(port: str):
    with TokenClient(port) as c:
        return c.info()


def hotp_at(rec, counter: int) -> str:
    return pyotp.HOTP(b32(rec.secret), digits=rec.digits, digest=getattr(hashlib, rec.algorithm)).at(counter)


# ----------------------------------------------------------------------------- one token, whole life


def test_deploy_provision_lock_press_sync_reset(tmp_path, firmware_files):
    out, key = tmp_path / "out", tmp_path / "keys" / "transport.key"
    with VirtualToken(tmp_path / "tok") as tok:  # a blank flash: MicroPython only
        tok.power_on()
        stages = []
        r = fwdeploy.deploy(tok.port, "sim", progress=lambda s, d, n: stages.append(s), files=firmware_files)
        assert r.board == "sim" and not r.info.provisioned and not r.info.locked
        # every file is on the board with the hash of the local build (the CLI deploy below builds)
        want = {name: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p, name in firmware_files}
        assert dict(r.files) == want
        assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == [
            "probe",
            "copy",
            "verify",
            "reset",
            "check",
        ]
        tok.wait_idle()

        res = cli("provision", "--port", tok.port, "--out", out, "--key-file", key)
        assert res.exit_code == 0, res.output
        # the key file was made for us, owner-only, and holds an AES-128 key in hex
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert len(bytes.fromhex(key.read_text().strip())) == 16
        seed_files = list(out.glob("*.pskc"))
        assert len(seed_files) == 1 and stat.S_IMODE(seed_files[0].stat().st_mode) == 0o600
        (rec,) = read_seed_file(seed_files[0], key=key.read_text().strip())
        assert len(rec.secret) == 20 and (rec.mode, rec.algorithm, rec.digits) == ("hotp", "sha1", 6)
        assert is_valid_serial(rec.serial)
        assert_no_seed(res.output, rec.secret)
        assert_no_seed(seed_files[0].read_bytes(), rec.secret)  # encrypted on disk

        # INFO: serial, mode, locked
        i = info(tok.port)
        assert (i.serial, i.mode, i.provisioned, i.locked) == (rec.serial, "hotp", True, True)

        # the key check value: the one of this seed, and not any HOTP code for counters 0..10000
        m = manifest_of(out)
        (row,) = m["tokens"]
        assert row["serial"] == rec.serial and row["locked"] is True and row["board"] == "sim"
        assert row["kcv"] == kcv_here(rec.secret, "sha1")
        hotp = pyotp.HOTP(b32(rec.secret))
        assert row["kcv"] not in {hotp.at(c) for c in range(10001)}
        for f in out.iterdir():
            if f.is_file():
                assert_no_seed(f.read_bytes(), rec.secret)

        # press: the code on the OLED is pyotp's for the seed read back from the seed file
        for counter in range(2):
            tok.press()
            tok.wait_idle()
            assert tok.screen().digits() == hotp.at(counter)

        # PROVISION again is refused, by the library and by the command, and nothing changes
        with TokenClient(tok.port) as c, pytest.raises(prov.AlreadyProvisioned, match="already provisioned"):
            prov.provision_token(c, prov.new_record(make_serial(4242)))
        res = cli("provision", "--port", tok.port, "--out", out, "--key-file", key)
        assert res.exit_code == 1
        assert "already provisioned" in res.stderr and "factory-reset" in res.stderr
        assert info(tok.port).serial == rec.serial

        # a locked token refuses deploy, and says why
        err = one_line_error(cli("deploy", "--port", tok.port))
        assert "locked" in err and "factory-reset" in err

        # time-sync on a locked token: a clock 2 minutes off minutes after the last sync is more
        # than its oscillator can drift: refused, in one line, and left as it was
        tok.set_clock(time.time() + 120)
        res = cli("time-sync", "--port", tok.port)
        assert res.exit_code == 1
        assert "clock jump refused" in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert 117 <= info(tok.port).time - time.time() <= 123
        # within a second of the host: in sync, reported, nothing moved
        tok.set_clock(time.time())
        res = cli("time-sync", "--port", tok.port)
        assert res.exit_code == 0, res.output
        assert re.search(r"clock was [+-]?\d s off: in sync", res.output), res.output
        assert abs(info(tok.port).time - time.time()) <= 3

        # reset: the screen asks for the button; held through the countdown, the token is wiped
        # and its REPL open again
        done = {}
        worker = threading.Thread(target=lambda: done.setdefault("r", cli("reset", "--port", tok.port)))
        worker.start()
        deadline = time.monotonic() + 10
        while text_lines(tok.screen())[:1] != ["Reset over USB:"]:
            assert time.monotonic() < deadline, "the token never asked for the button"
            time.sleep(0.05)
        tok.hold()
        worker.join(60)
        tok.release()
        assert done["r"].exit_code == 0, done["r"].output
        assert "hold it through the 5 s countdown" in done["r"].stderr
        assert "flash scrub complete" in done["r"].stdout
        i = info(tok.port)
        assert not i.provisioned and not i.locked and i.serial == ""
        assert rec.secret not in tok.flash_path.read_bytes()
        # open again: deploy works (files copied and verified)
        res = cli("deploy", "--port", tok.port, "--board", "sim")
        assert res.exit_code == 0, res.output
        assert "verified by SHA-256" in res.output


# ----------------------------------------------------------------------------- batches


def start_all(dirs):
    toks = [VirtualToken(d) for d in dirs]
    for t in toks:
        t.power_on()
    return toks


def test_batch_of_five_virtual_tokens_into_the_verifier(tmp_path):
    out, key = tmp_path / "out", tmp_path / "config" / "keyfob" / "transport.key"  # the default key file
    res = cli("provision", "--count", 5, "--out", out)
    assert res.exit_code == 0, res.output
    (seed_file,) = out.glob("*.pskc")
    recs = read_seed_file(seed_file, key=key.read_text().strip())
    serials = [r.serial for r in recs]
    assert len(set(serials)) == 5 and all(is_valid_serial(s) for s in serials)
    assert len({r.secret for r in recs}) == 5
    for r in recs:
        assert_no_seed(res.output, r.secret)
    m = manifest_of(out)
    assert [t["serial"] for t in m["tokens"]] == serials and m["failed"] == []
    assert {t["kcv"] for t in m["tokens"]} == {kcv_here(r.secret, r.algorithm) for r in recs}
    assert sorted(p.name for p in (out / "sims").iterdir()) == sorted(serials)

    # the seed file imports into a fresh verifier
    db = ["--db", tmp_path / "v.db", "--key-file", tmp_path / "v.key"]
    assert cli("server", "init", *db).exit_code == 0
    # ... with the key file provisioning used, unasked (issue 14: it took --psk-file before)
    imp = cli("token", "import", seed_file, "--json", *db)
    assert imp.exit_code == 0, imp.output
    assert json.loads(imp.stdout) == {"imported": serials}

    # each token (its flash image left in out/sims/<serial>) shows its own first code
    toks = start_all([out / "sims" / s for s in serials])
    try:
        for tok, rec in zip(toks, recs, strict=True):
            tok.press()
            tok.wait_idle()
            assert tok.screen().digits() == hotp_at(rec, 0), rec.serial
    finally:
        for t in toks:
            t.close()

    # serials are never reused in that folder: a serial given by hand that was used is refused
    # before any token is started, and the next batch carries on after the last one
    err = one_line_error(cli("provision", "--count", 1, "--serial", serials[2], "--out", out, "--key-file", key))
    assert "already used" in err and serials[2] in err
    assert len(list(out.glob("*.pskc"))) == 1
    res = cli(
        "provision",
        "--count",
        1,
        "--out",
        out,
        "--key-file",
        key,
        "--mode",
        "totp",
        "--algorithm",
        "sha256",
        "--digits",
        "8",
        "--show-secret",
    )
    assert res.exit_code == 0, res.output
    newest = max(out.glob("*.pskc"), key=lambda p: p.stat().st_mtime_ns)
    (rec6,) = read_seed_file(newest, key=key.read_text().strip())
    assert rec6.serial not in serials and (rec6.mode, rec6.algorithm, rec6.digits) == ("totp", "sha256", 8)
    assert len(rec6.secret) == 32
    assert f"secret {rec6.serial} {b32(rec6.secret).rstrip('=')}" in res.output  # only when asked
    (tok6,) = start_all([out / "sims" / rec6.serial])
    with tok6:
        for _ in range(3):  # a press that straddles a TOTP step is retried
            before = tok6.clock()[0]
            tok6.press()
            tok6.wait_idle()
            shown = tok6.screen().digits()
            if int(tok6.clock()[0]) // 30 == int(before) // 30:
                break
        totp = pyotp.TOTP(b32(rec6.secret), digits=8, digest=hashlib.sha256, interval=30)
        assert shown == totp.at(int(before))


def test_failing_token_in_a_batch_does_not_lose_the_others(tmp_path, make_token):
    """Token 2 of 3 is already provisioned: it is refused and left alone, tokens 1 and 3 are
    provisioned, locked and saved, and the command exits non-zero with one line about token 2."""
    out, key = tmp_path / "out", tmp_path / "transport.key"
    toks = [make_token(f"t{i}") for i in range(3)]
    for t in toks:
        t.power_on()
    old_seed = secrets.token_bytes(20)
    dev_provision(toks[1], old_seed, serial="KF000123459")
    for t in toks:
        t.wait_idle()
    ports = sum((["--port", t.port] for t in toks), [])
    res = cli("provision", *ports, "--out", out, "--passphrase-stdin", input="batch pass phrase\n")
    assert res.exit_code == 1, res.output
    errs = res.stderr.strip().splitlines()
    assert len(errs) == 1 and toks[1].port in errs[0] and "already provisioned" in errs[0]
    (seed_file,) = out.glob("*.pskc")
    recs = read_seed_file(seed_file, passphrase="batch pass phrase")
    m = manifest_of(out)
    assert m["protection"] == "passphrase" and not key.exists()
    assert [t["port"] for t in m["tokens"]] == [toks[0].port, toks[2].port]
    assert [r.serial for r in recs] == [t["serial"] for t in m["tokens"]]
    (failed,) = m["failed"]
    assert failed["port"] == toks[1].port and failed["stage"] == "info" and failed["seed_on_token"] is False
    assert failed["serial"] not in [r.serial for r in recs]
    assert info(toks[1].port).serial == "KF000123459"
    for t, r in ((toks[0], recs[0]), (toks[2], recs[1])):
        i = info(t.port)
        assert (i.serial, i.locked) == (r.serial, True)
        t.press()
        t.wait_idle()
        assert t.screen().digits() == hotp_at(r, 0)
    # the failed serial is spent: the next allocation does not hand it out again
    assert failed["serial"] not in prov.OutputDir(out).allocate(3)


def test_interrupted_batch_keeps_the_seeds_of_finished_tokens(tmp_path, make_token):
    """Ctrl-C (here: raised from the progress callback) while token 2 is being provisioned: token 1
    is locked and its seed is already in the seed file on disk; token 2 was not touched."""
    toks = [make_token(f"i{i}") for i in range(2)]
    for t in toks:
        t.power_on()
        t.wait_idle()
    protection = prov.Protection.from_key_file(tmp_path / "k.key")

    def progress(i, total, port, stage):
        if i == 1 and stage == "provision":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prov.provision_batch([t.port for t in toks], tmp_path / "out", protection, progress=progress)
    (seed_file,) = (tmp_path / "out").glob("*.pskc")
    (rec,) = read_seed_file(seed_file, key=protection.key)
    i0, i1 = info(toks[0].port), info(toks[1].port)
    assert (i0.serial, i0.locked) == (rec.serial, True)
    assert not i1.provisioned
    toks[0].press()
    toks[0].wait_idle()
    assert toks[0].screen().digits() == hotp_at(rec, 0)


def test_provision_every_connected_token_skips_the_provisioned_one(tmp_path, make_token):
    """Without --port and --count: every token keyfob.device.ports lists (here two registered
    virtual tokens); one already provisioned is skipped, without spending a serial on it."""
    out, key = tmp_path / "out", tmp_path / "transport.key"
    toks = [make_token(f"r{i}", register=True) for i in range(2)]
    for t in toks:
        t.power_on()
    dev_provision(toks[0], secrets.token_bytes(20), serial="KF000123459")
    toks[1].wait_idle()
    res = cli("provision", "--out", out, "--key-file", key)
    assert res.exit_code == 0, res.output
    assert res.stderr.strip() == f"Skipped {toks[0].port}: already provisioned as KF000123459"
    (row,) = manifest_of(out)["tokens"]
    assert row["port"] == toks[1].port
    assert (out / prov.LEDGER).read_text().split()[0::2] == [row["serial"]]
    assert info(toks[1].port).serial == row["serial"]
    # nothing left to do: one clear line, non-zero exit
    err = one_line_error(cli("provision", "--out", out, "--key-file", key))
    assert "no unprovisioned token" in err and f"{toks[1].port} already provisioned as {row['serial']}" in err


# ----------------------------------------------------------------------------- deploy verification


def test_deploy_detects_files_damaged_in_transit_or_on_the_board(tmp_path, firmware_files, monkeypatch):
    from mpremote.transport import Transport

    honest = Transport.fs_writefile

    def damaging(self, dest, data, *a, **kw):
        if dest == "otp.mpy":
            data = data[:100] + bytes([data[100] ^ 0x40]) + data[101:]
        return honest(self, dest, data, *a, **kw)

    with VirtualToken(tmp_path / "tok") as tok:
        tok.power_on()
        monkeypatch.setattr(Transport, "fs_writefile", damaging)
        with pytest.raises(fwdeploy.DeployError, match=r"hash mismatch on otp\.mpy"):
            fwdeploy.deploy(tok.port, "sim", files=firmware_files)
        monkeypatch.setattr(Transport, "fs_writefile", honest)
        fwdeploy.deploy(tok.port, "sim", files=firmware_files)
        fwdeploy.verify(tok.port, firmware_files)  # all intact: no error

        # damage one file and remove another on the board itself (the REPL is open: unprovisioned)
        code = (
            "d = open('ui.mpy', 'rb').read()\n"
            "f = open('ui.mpy', 'wb'); f.write(d[:-1] + bytes([d[-1] ^ 1])); f.close()\n"
            "import os; os.remove('font.mpy')"
        )
        run = subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", tok.port, "resume", "exec", code],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        with pytest.raises(fwdeploy.DeployError) as exc:
            fwdeploy.verify(tok.port, firmware_files)
        assert "hash mismatch on ui.mpy" in str(exc.value) and "missing font.mpy" in str(exc.value)
        assert "otp.mpy" not in str(exc.value)


# ----------------------------------------------------------------------------- the host side alone


def mistyped(serial: str) -> str:
    """The serial with its check digit off by one."""
    return serial[:-1] + str((int(serial[-1]) + 1) % 10)


def test_records_serials_and_key_files(tmp_path):
    recs = [prov.new_record(make_serial(7), algorithm=a) for a in ("sha1", "sha256", "sha1")]
    assert [len(r.secret) for r in recs] == [20, 32, 20]
    assert len({r.secret for r in recs}) == 3
    assert all(s not in repr(r) for r in recs for s in spellings(r.secret))
    with pytest.raises(prov.ProvisionError, match="check digit"):
        prov.new_record(mistyped(make_serial(7)))
    with pytest.raises(prov.ProvisionError, match="digits"):
        prov.new_record(make_serial(7), digits=7)

    out = prov.OutputDir(tmp_path / "out")
    first = out.allocate(3)
    assert first == [make_serial(n) for n in (1, 2, 3)]
    assert out.allocate(2, first=make_serial(10)) == [make_serial(10), make_serial(11)]
    assert out.allocate(1) == [make_serial(12)]  # after the highest used
    with pytest.raises(prov.SerialInUse):
        out.allocate(3, first=make_serial(9))  # 9 is free, 10 and 11 are not
    with pytest.raises(prov.OutputError, match="check digit"):
        out.allocate(1, first=mistyped(make_serial(20)))
    # concurrent allocations (threads here, processes share the same file lock) never collide
    got: list[list[str]] = []
    threads = [threading.Thread(target=lambda: got.append(out.allocate(5))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [s for g in got for s in g]
    assert len(flat) == 20 and len(set(flat)) == 20 and not set(flat) & set(first)

    # key files: created owner-only, an existing one is reused, a readable or broken one refused
    kf = tmp_path / "k" / "transport.key"
    p1 = prov.Protection.from_key_file(kf)
    assert p1.key_file_created and stat.S_IMODE(kf.stat().st_mode) == 0o600
    p2 = prov.Protection.from_key_file(kf)
    assert not p2.key_file_created and p2.key == p1.key
    assert p1.key.hex() not in repr(p1)
    os.chmod(kf, 0o644)
    with pytest.raises(prov.OutputError, match="read by others"):
        prov.Protection.from_key_file(kf)
    bad = tmp_path / "bad.key"
    bad.write_text("not a key, maybe a password 1234\n")
    os.chmod(bad, 0o600)
    with pytest.raises(prov.OutputError) as exc:
        prov.Protection.from_key_file(bad)
    assert "password" not in str(exc.value)

    # choosing how to protect the seed file: one way only
    err = one_line_error(cli("provision", "--count", 1, "--plain", "--key-file", kf, "--out", tmp_path / "o2"))
    assert "only one of" in err
    assert not (tmp_path / "o2" / "sims").exists()


class WrongKcvTransport:
    """A token that answers INFO (fresh, unprovisioned) and acknowledges PROVISION with a key check
    value made from another seed: the seed did not land intact."""

    def __init__(self, wrong_kcv: str):
        self.wrong_kcv = wrong_kcv
        self.sent: list[int] = []
        self.pending = b""

    def write(self, data):
        for frame in frames.Decoder().feed(data):
            self.sent.append(frame.type)
            if frame.type == frames.INFO:
                fields = {
                    "proto": 1, "fw": "1.0", "board": "sim", "serial": "", "mode": "hotp",
                    "algorithm": "sha1", "digits": 6, "period": 30, "counter": 0, "provisioned": False,
                    "locked": False, "time": None, "drift_ppb": 0, "synced_at": 0,
                }  # fmt: skip
            else:
                fields = {"kcv": self.wrong_kcv}
            self.pending += frames.encode_json(frames.OK, {"re": frame.type, **fields})

    def read(self, max_bytes):
        out, self.pending = self.pending[:max_bytes], self.pending[max_bytes:]
        return out

    def reset_input_buffer(self):
        pass

    def close(self):
        pass


def test_wrong_key_check_value_fails_the_token_with_the_seed_on_it():
    rec = prov.new_record(make_serial(31))
    wrong = kcv_here(secrets.token_bytes(20), "sha1")
    assert wrong != kcv_here(rec.secret, "sha1")
    transport = WrongKcvTransport(wrong)
    with pytest.raises(prov.TokenFailed) as exc:
        prov.provision_token(TokenClient(transport, timeout=2), rec, port="/dev/fake")
    assert exc.value.stage == "provision"
    assert exc.value.seed_on_token is True  # the token holds some seed now: factory-reset it
    assert "key check value" in str(exc.value)
    assert transport.sent == [frames.INFO, frames.PROVISION]  # stopped there: no SETTIME, no LOCK
    assert_no_seed(str(exc.value), rec.secret)
    assert wrong not in str(exc.value) and kcv_here(rec.secret, "sha1") not in str(exc.value)


def test_token_import_looks_where_provisioning_put_the_key(tmp_path, monkeypatch):
    """The manifest next to a seed file names its key file (absolute, even when --key-file was
    relative), and import without --psk-file uses it; without a manifest, the default key file."""
    db = ["--db", tmp_path / "v.db", "--key-file", tmp_path / "v.key"]
    assert cli("server", "init", *db).exit_code == 0
    monkeypatch.chdir(tmp_path)
    protection = prov.Protection.from_key_file("own.key")  # created, as `--key-file own.key` does
    assert protection.key_file == tmp_path / "own.key"
    out = prov.OutputDir(tmp_path / "out")
    out.ensure()
    writer = prov._Writer(out, "batch", protection, {})
    record = prov.new_record(make_serial(7), "hotp", "sha1")
    write_pskc(writer.seed_file, [record], **protection.pskc_args())
    writer.save([], [])  # the manifest, as provisioning writes it
    assert manifest_of(tmp_path / "out")["key_file"] == str(tmp_path / "own.key")
    assert prov.key_file_for(writer.seed_file) == tmp_path / "own.key"

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    imp = cli("token", "import", writer.seed_file, "--json", *db)
    assert imp.exit_code == 0, imp.output
    assert json.loads(imp.stdout) == {"imported": [record.serial]}

    # no manifest: the default key file ($XDG_CONFIG_HOME/keyfob/transport.key here)
    lone = tmp_path / "lone.pskc"
    other = prov.new_record(make_serial(8), "totp", "sha256")
    default = prov.Protection.from_key_file(prov.default_key_file())
    assert default.key_file == tmp_path / "config" / "keyfob" / "transport.key"
    write_pskc(lone, [other], **default.pskc_args())
    assert cli("token", "import", lone, *db).exit_code == 0

    # the key file is gone: one line saying where import looked, nothing imported
    (tmp_path / "own.key").unlink()
    again = cli("server", "init", "--db", tmp_path / "v2.db", "--key-file", tmp_path / "v.key")
    assert again.exit_code == 0
    imp = cli("token", "import", writer.seed_file, "--db", tmp_path / "v2.db", "--key-file", tmp_path / "v.key")
    assert imp.exit_code != 0
    assert f"there is no key file at {tmp_path / 'own.key'}" in one_line_error(imp)
    # a plain CSV never looks for a key file
    csv_file = tmp_path / "plain.csv"
    csv_file.write_text(f"CSV-9,{secrets.token_hex(20)},hotp,6,0\n")
    assert cli("token", "import", csv_file, "--db", tmp_path / "v2.db", "--key-file", tmp_path / "v.key").exit_code == 0
