"""Issue 6 through the verifier and its command line: seed files (PSKC, OATH CSV, otpauth URIs) move
tokens into and out of the inventory, other vendors' serials are accepted, software twins are QR
codes that a decoder reads back, and bad files give one clear error with nothing written. Each
verifier's database is SQLite or PostgreSQL (the ``server`` fixture, over ``make_db``); the tests of
a format itself (RFC 6030's figures, QR codes, a key file's mode) run on SQLite only, as the
database adds nothing there.

Codes are computed with pyotp (and the RFC 4226 table), never with keyfob's own OTP code."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import secrets
import stat
import time
from pathlib import Path

import databases as dbs
import pskc
import pyotp
import pytest
from click.testing import CliRunner
from keyfob.cli import main
from keyfob.formats import write_pskc
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.verifier import BadInput, Policy, Verifier
from PIL import Image

# RFC 6030 figures and the RFC 4226 appendix D table, typed once in the PSKC format tests.
from test_formats_pskc import (
    FIGURE_3,
    FIGURE_6,
    FIGURE_6_KEY,
    FIGURE_7,
    RFC4226_SECRET,
    RFC4226_TRUNCATED,
)

# A QR decoder that knows nothing of segno (zxing-cpp); rasterisers of segno's SVG and terminal output.
from test_formats_qr import decode, modules_to_image, svg_to_modules, terminal_to_modules

PW = "pw ends in 4321"
PSK = bytes(range(0x20, 0x30))
PASSPHRASE = "correct horse battery"


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for name in ("KEYFOB_KEY", "KEYFOB_KEY_FILE", "KEYFOB_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KEYFOB_ARGON2_PROFILE", "fast")


class Server:
    """One verifier (database + its own key file) driven through the CLI."""

    def __init__(self, root: Path, name: str, db: str, databases: dbs.Databases):
        self.db = db
        self.key = root / f"{name}.key"
        self._databases = databases

    def __call__(self, *args, input=None):
        argv = [str(a) for a in args] + ["--db", str(self.db), "--key-file", str(self.key)]
        return CliRunner().invoke(main, argv, input=input, catch_exceptions=False)

    def ok(self, *args, input=None):
        r = self(*args, input=input)
        assert r.exit_code == 0, (args, r.output)
        return r

    def setup(self, user: str) -> Server:
        self.ok("server", "init")
        self.ok("user", "add", user, "--password-stdin", input=PW + "\n")
        return self

    def tokens(self) -> dict[str, dict]:
        return {t["serial"]: t for t in json.loads(self.ok("token", "list", "--json").stdout)}

    def audit(self, action: str) -> list[dict]:
        return json.loads(self.ok("audit", "--action", action, "--limit", "1000", "--json").stdout)

    def dump(self) -> dict:
        return dbs.dump(self.db)

    def on_disk(self) -> bytes:
        return self._databases.on_disk(self.db)


@pytest.fixture
def server(tmp_path, make_db, databases):
    """Factory: server(name) -> a verifier on a fresh database of the test's engine."""
    return lambda name: Server(tmp_path, name, make_db(name), databases)


def otp(rec: TokenRecord):
    key = base64.b32encode(rec.secret).decode()
    digest = getattr(hashlib, rec.algorithm)
    if rec.mode == "hotp":
        return pyotp.HOTP(key, digits=rec.digits, digest=digest)
    return pyotp.TOTP(key, digits=rec.digits, digest=digest, interval=rec.period)


def code(rec: TokenRecord, counter: int, later: int = 0) -> str:
    """HOTP: the code at ``counter + later``; TOTP: the code ``later`` steps from now."""
    if rec.mode == "hotp":
        return otp(rec).at(counter + later)
    return otp(rec).at(int(time.time()) + later * rec.period)


def clear_of_a_step_change(periods=(30, 60), margin: float = 8.0) -> None:
    """Wait, if need be, until the next TOTP step change of each period is ``margin`` s away, so
    that a link and the validation after it (a few CLI calls) fall within one step. The codes are
    computed from the wall clock here and checked against it there; a step that changed between
    them gave this module's known flake (a validation refused as wrong-code)."""
    while any(p - time.time() % p < margin for p in periods):
        time.sleep(0.2)


def five_tokens() -> list[TokenRecord]:
    """Both modes, both hashes, 6 and 8 digits, 30 and 60 s, a counter not at 0, and one vendor
    token whose serial has no keyfob check digit (a Feitian c200-style 13-digit number)."""
    return [
        TokenRecord(make_serial(101), "hotp", "sha1", 6, secrets.token_bytes(20)),
        TokenRecord(make_serial(102), "hotp", "sha256", 8, secrets.token_bytes(32), counter=41),
        TokenRecord(make_serial(103), "totp", "sha1", 6, secrets.token_bytes(20), period=30),
        TokenRecord(make_serial(104), "totp", "sha256", 8, secrets.token_bytes(32), period=60),
        TokenRecord("2600123456789", "hotp", "sha1", 8, secrets.token_bytes(20), counter=7),
    ]


def spellings(secret: bytes) -> list[str]:
    return [secret.hex(), secret.hex().upper(), base64.b32encode(secret).decode().rstrip("=")]


def assert_one_clear_line(r, *secrets_: bytes, code: int = 2) -> str:
    """One line, naming no secret; exit 2 (bad input) unless ``code`` says another kind."""
    assert r.exit_code == code, r.output
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in r.output
    for s in secrets_:
        for sp in spellings(s):
            assert sp.lower() not in r.output.lower()
    return err


# ----------------------------------------------------------------------------- round trips

UNLOCK = {
    "pskc-key": (("--key", PSK.hex()), {"key": PSK}),
    "pskc-passphrase": (("--passphrase", PASSPHRASE), {"passphrase": PASSPHRASE}),
    "csv": (("--plain",), {}),
    "uri": (("--plain",), {}),
}


def read_export_independently(path: Path, fmt: str, unlock: dict) -> dict[str, tuple[bytes, int | None]]:
    """serial -> (seed, HOTP counter or None), read with python-pskc, the csv module or pyotp."""
    if fmt.startswith("pskc"):
        container = pskc.PSKC(str(path))
        if "key" in unlock:
            container.encryption.key = unlock["key"]
        else:
            container.encryption.derive_key(unlock["passphrase"])
        return {k.serial: (k.secret, k.counter) for k in container.keys}
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(path.read_text())))[1:]
        return {r[0]: (bytes.fromhex(r[1]), int(r[4]) if r[2] == "hotp" else None) for r in rows}
    out = {}
    for line in path.read_text().splitlines():
        o = pyotp.parse_uri(line)
        seed = base64.b32decode(o.secret + "=" * (-len(o.secret) % 8))
        out[o.name] = (seed, o.initial_count if isinstance(o, pyotp.HOTP) else None)
    return out


@pytest.mark.parametrize("fmt", list(UNLOCK))
def test_round_trip_between_two_verifiers(tmp_path, fmt, server):
    """Provisioning PSKC (encrypted) -> verifier A -> link, validate -> export -> verifier B ->
    the counter came along (A's used codes are refused in B) -> link, validate in B."""
    recs = five_tokens()
    serials = [r.serial for r in recs]
    a = server("a").setup("alice")
    prov = tmp_path / "provisioned.pskc"
    write_pskc(prov, recs, key=PSK)
    r = a.ok("token", "import", prov, "--key", PSK.hex(), "--json")
    assert json.loads(r.stdout) == {"imported": serials}
    clear_of_a_step_change()
    for rec in recs:
        a.ok("token", "link", "alice", rec.serial, code(rec, rec.counter))
    for rec in recs:
        r = a.ok("validate", "alice", code(rec, rec.counter, 1), "--code-only", "--json", "--explain")
        assert json.loads(r.stdout)["serial"] == rec.serial

    opts, unlock = UNLOCK[fmt]
    kind = fmt.split("-")[0]
    out = tmp_path / f"export.{kind}"
    r = a.ok("token", "export", "--format", kind, "--out", out, *opts, "--json")
    assert json.loads(r.stdout)["exported"] == sorted(serials)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    text = out.read_text()
    if kind == "pskc":
        for rec in recs:
            assert not any(sp in text for sp in spellings(rec.secret) + [base64.b64encode(rec.secret).decode()])
    got = read_export_independently(out, fmt, unlock)
    assert set(got) == set(serials)
    for rec in recs:
        seed, counter = got[rec.serial]
        assert seed == rec.secret
        if rec.mode == "hotp":
            assert counter == rec.counter + 2  # link + one validation in A
    entries = a.audit("token-export")
    assert sorted(e["serial"] for e in entries) == sorted(serials)
    assert all(e["actor"].startswith("cli") and e["detail"].startswith(kind) for e in entries)
    assert {e["user"] for e in entries} == {"alice"}
    raw = a.on_disk()
    for rec in recs:
        assert rec.secret not in raw and not any(sp.encode() in raw for sp in spellings(rec.secret))

    def b_off(rec):  # HOTP: A used two codes; TOTP: B never saw a step, the current one is fine
        return 2 if rec.mode == "hotp" else 0

    b = server("b").setup("bob")
    r = b.ok("token", "import", out, *(o for o in opts if o != "--plain"), "--json")
    assert sorted(json.loads(r.stdout)["imported"]) == sorted(serials)
    listed = b.tokens()
    for rec in recs:
        t = listed[rec.serial]
        assert (t["mode"], t["algorithm"], t["digits"], t["state"]) == (
            rec.mode,
            rec.algorithm,
            rec.digits,
            "unassigned",
        )
        if rec.mode == "hotp":
            assert t["counter"] == rec.counter + 2
        else:
            assert t["period"] == rec.period
    clear_of_a_step_change()
    for rec in recs:
        if rec.mode == "hotp":  # A accepted this one: B must not
            assert b("token", "link", "bob", rec.serial, code(rec, rec.counter, 1)).exit_code == 1
        b.ok("token", "link", "bob", rec.serial, code(rec, rec.counter, b_off(rec)))
    for rec in recs:
        r = b.ok("validate", "bob", PW, code(rec, rec.counter, b_off(rec) + 1), "--json", "--explain")
        assert json.loads(r.stdout)["serial"] == rec.serial


# ----------------------------------------------------------------------------- RFC 6030 figures


def rfc4226(i: int) -> str:
    return str(RFC4226_TRUNCATED[i] % 10**8).zfill(8)


@dbs.sqlite_only
@pytest.mark.parametrize(
    ("figure", "opts"),
    [
        (FIGURE_3, ()),
        (FIGURE_6, ("--key", FIGURE_6_KEY)),
        (FIGURE_7, ("--passphrase", "qwerty")),
        (FIGURE_7, ("--passphrase-stdin",)),
    ],
    ids=["figure3-plain", "figure6-psk", "figure7-pbkdf2", "figure7-pbkdf2-stdin"],
)
def test_rfc6030_figures_into_the_verifier(tmp_path, figure, opts, server):
    stdin = "qwerty\n" if "--passphrase-stdin" in opts else None
    rfc_otp = pyotp.HOTP(base64.b32encode(RFC4226_SECRET).decode(), digits=8)
    assert [rfc_otp.at(i) for i in range(5)] == [rfc4226(i) for i in range(5)]
    v = server("v").setup("jsmith")
    path = tmp_path / "figure.pskcxml"
    path.write_text(figure)
    r = v.ok("token", "import", path, *opts, "--json", input=stdin)
    assert json.loads(r.stdout) == {"imported": ["987654321"]}
    t = v.tokens()["987654321"]
    assert (t["mode"], t["algorithm"], t["digits"], t["counter"]) == ("hotp", "sha1", 8, 0)
    v.ok("token", "link", "jsmith", "987654321", rfc4226(0))
    for i in (1, 2, 3):
        v.ok("validate", "jsmith", PW + rfc4226(i))
    assert v("validate", "jsmith", PW + rfc4226(3)).exit_code == 1  # replay

    # the same file again: the serial is in the inventory, nothing imported, nothing written
    before = v.dump()
    err = assert_one_clear_line(v("token", "import", path, *opts, input=stdin), RFC4226_SECRET, code=1)
    assert "987654321" in err and "already in the inventory" in err
    assert v.dump() == before

    # the typed foreign serial works wherever a serial is typed
    r = v.ok("token", "resync", "987654321", rfc_otp.at(8), rfc_otp.at(9), "--json")
    assert json.loads(r.stdout)["accepted"] is True
    v.ok("token", "unlock", " 987654321 ")
    assert {e["serial"] for e in json.loads(v.ok("audit", "--serial", "987654321", "--json").stdout)} == {"987654321"}
    r = v.ok("token", "lost", "987654321", "--json")
    assert json.loads(r.stdout)["serial"] == "987654321" and json.loads(r.stdout)["user"] == "jsmith"
    v.ok("token", "revoke", "987654321")
    assert v.tokens()["987654321"]["state"] == "revoked"


# ----------------------------------------------------------------------------- serials


def test_vendor_serials_from_csv_and_a_mistyped_keyfob_serial(tmp_path, server):
    v = server("v").setup("carol")
    seeds = [secrets.token_bytes(20), secrets.token_bytes(20), secrets.token_bytes(32)]
    good = make_serial(55)
    rows = [
        "serial,seed,type,digits,counter/period",
        f"2600123456789,{seeds[0].hex()},totp,6,60",
        f"283599,{seeds[1].hex()},hotp,8,0",
        f"mo-1,{base64.b32encode(seeds[2]).decode()},totp,6,30",
    ]
    path = tmp_path / "vendor.csv"
    path.write_text("\n".join(rows) + "\n")
    r = v.ok("token", "import", path, "--json")
    assert json.loads(r.stdout) == {"imported": ["2600123456789", "283599", "mo-1"]}
    t = v.tokens()
    assert t["mo-1"]["algorithm"] == "sha256" and t["2600123456789"]["period"] == 60

    yubi = TokenRecord("283599", "hotp", "sha1", 8, seeds[1])
    v.ok("token", "link", "carol", "283599", code(yubi, 0))
    v.ok("validate", "carol", PW, code(yubi, 1))

    # a keyfob serial with a wrong check digit is refused, even next to good lines: nothing imported
    mistyped = good[:-1] + str((int(good[-1]) + 3) % 10)
    bad = tmp_path / "mistyped.csv"
    bad.write_text(f"{good},{secrets.token_hex(20)},hotp,6,0\n{mistyped},{secrets.token_hex(20)},hotp,6,0\n")
    before = v.dump()
    err = assert_one_clear_line(v("token", "import", bad))
    assert "token 2" in err and "check digit" in err
    assert v.dump() == before
    err = assert_one_clear_line(v("token", "unlock", mistyped))
    assert "check digit" in err


# ----------------------------------------------------------------------------- software twins


@dbs.sqlite_only
def test_twin_qr_codes_decode_and_their_codes_validate(tmp_path, server):
    h = TokenRecord(make_serial(201), "hotp", "sha256", 8, secrets.token_bytes(32), counter=5)
    t = TokenRecord(make_serial(202), "totp", "sha1", 6, secrets.token_bytes(20), period=30)
    v = server("v").setup("dave")
    write_pskc(tmp_path / "p.pskc", [h, t], plain=True)
    v.ok("token", "import", tmp_path / "p.pskc")
    v.ok("token", "link", "dave", h.serial, code(h, 5))
    v.ok("validate", "dave", PW + code(h, 6))  # the verifier now expects counter 7

    # refused without the flag: exit 2, one line, nothing written, no file
    before = v.dump()
    png = tmp_path / "twin.png"
    err = assert_one_clear_line(v("token", "twin", h.serial, "--png", png), h.secret)
    assert "--i-understand-this-copies-the-seed" in err
    assert not png.exists() and v.dump() == before

    flag = "--i-understand-this-copies-the-seed"
    r = v.ok("token", "twin", h.serial, "--png", png, flag, "--show-uri")
    assert stat.S_IMODE(png.stat().st_mode) == 0o600
    uri = decode(Image.open(png))
    assert r.stdout.strip().splitlines()[-1] == uri
    assert "counter=7" in uri and uri.startswith("otpauth://hotp/keyfob:")
    app = pyotp.parse_uri(uri)
    # pyotp's HOTP.at(n) is the code at the URI's counter + n: the app's first code is counter 7
    assert app.name == h.serial and app.initial_count == 7 and app.at(0) == code(h, 7)
    r = v.ok("validate", "dave", PW + app.at(0), "--json", "--explain")
    assert json.loads(r.stdout)["serial"] == h.serial

    svg = tmp_path / "twin.svg"
    r = v.ok("token", "twin", t.serial, "--svg", svg, flag)
    assert r.stdout == ""  # the URI is printed only with --show-uri
    uri_t = decode(modules_to_image(svg_to_modules(svg.read_bytes())))
    app_t = pyotp.parse_uri(uri_t)
    assert isinstance(app_t, pyotp.TOTP) and app_t.interval == 30
    v.ok("token", "link", "dave", t.serial, app_t.now())

    r = v.ok("token", "twin", t.serial, flag)  # terminal by default
    assert decode(modules_to_image(terminal_to_modules(r.stdout))) == uri_t
    assert base64.b32encode(t.secret).decode().rstrip("=") not in r.stdout  # only the QR code

    entries = v.audit("token-twin")
    assert [(e["serial"], e["detail"], e["user"]) for e in reversed(entries)] == [
        (h.serial, "qr png, uri shown", "dave"),
        (t.serial, "qr svg", None),
        (t.serial, "qr terminal", "dave"),
    ]
    for rec in (h, t):
        for sp in spellings(rec.secret):
            assert sp not in json.dumps(entries)

    # no twin of a lost token, nor of an unknown one; nothing written
    v.ok("token", "lost", h.serial)
    before = v.dump()
    assert "lost" in assert_one_clear_line(v("token", "twin", h.serial, flag), code=1)  # refused
    assert_one_clear_line(v("token", "twin", make_serial(999), flag))
    assert_one_clear_line(v("token", "twin", t.serial, "--png", tmp_path / "x.svg", flag))
    assert v.dump() == before


@dbs.sqlite_only
def test_twin_with_json(tmp_path, server):
    h = TokenRecord(make_serial(211), "hotp", "sha1", 6, secrets.token_bytes(20), counter=3)
    t = TokenRecord(make_serial(212), "totp", "sha256", 8, secrets.token_bytes(32), period=60)
    v = server("v").setup("gwen")
    write_pskc(tmp_path / "p.pskc", [h, t], plain=True)
    v.ok("token", "import", tmp_path / "p.pskc")
    flag = "--i-understand-this-copies-the-seed"
    png = tmp_path / "h.png"
    r = v.ok("token", "twin", h.serial, "--png", png, flag, "--json")
    assert json.loads(r.stdout) == {"serial": h.serial, "mode": "hotp", "counter": 3, "period": None, "file": str(png)}
    assert pyotp.parse_uri(decode(Image.open(png))).at(0) == code(h, 3)
    r = v.ok("token", "twin", t.serial, "--show-uri", flag, "--json")
    out = json.loads(r.stdout)
    assert (out["mode"], out["period"], out["file"]) == ("totp", 60, None)
    assert pyotp.parse_uri(out["uri"]).now() == otp(t).now()
    assert [e["detail"] for e in v.audit("token-twin")] == ["qr none, uri shown", "qr png"]
    # a terminal drawing is not JSON: refused (as JSON too), nothing audited
    for extra in ((), ("--terminal",)):
        r = v("token", "twin", t.serial, flag, "--json", *extra)
        assert r.exit_code == 2 and "--png" in json.loads(r.stdout)["error"]["message"]
    r = v("token", "twin", t.serial, "--json")
    assert r.exit_code == 2 and flag in json.loads(r.stdout)["error"]["message"]
    assert len(v.audit("token-twin")) == 2


# ----------------------------------------------------------------------------- bad input


def test_bad_files_and_requests_change_nothing(tmp_path, server):
    v = server("v").setup("erin")
    recs = five_tokens()
    enc = tmp_path / "enc.pskc"
    write_pskc(enc, recs, key=PSK)
    # one token already in the inventory, linked
    v.ok(
        "token",
        "import",
        "otpauth://hotp/keyfob:"
        + recs[0].serial
        + "?secret="
        + base64.b32encode(recs[0].secret).decode().rstrip("=")
        + "&counter=0",
    )
    v.ok("token", "link", "erin", recs[0].serial, code(recs[0], 0))

    data = enc.read_text()
    mac = re.findall(r"<pskc:ValueMAC>([^<]+)</pskc:ValueMAC>", data)[1]
    files = {
        "bad-mac.pskc": data.replace(mac, ("B" if mac[0] == "A" else "A") + mac[1:]),
        "truncated.pskc": data[: len(data) // 2],
        "xxe.pskc": FIGURE_3.replace(
            '<?xml version="1.0" encoding="UTF-8"?>\n',
            f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE KeyContainer [\n'
            f'  <!ENTITY seed SYSTEM "file://{tmp_path / "psk.hex"}">\n]>\n',
        ).replace("MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=", "&seed;"),
        "short.pskc": FIGURE_3.replace("MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=", base64.b64encode(b"\x0b\xad\x5e").decode()),
        "bad-line.csv": "serial,seed,type,digits,counter/period\n"
        f"{make_serial(301)},{secrets.token_hex(20)},hotp,6,0\n"
        f"{make_serial(302)},{secrets.token_hex(20)},motp,6,0\n",
        "one-known.csv": f"{make_serial(303)},{secrets.token_hex(20)},hotp,6,0\n"
        f"{recs[0].serial},{secrets.token_hex(20)},hotp,6,0\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "psk.hex").write_text(PSK.hex())
    (tmp_path / "psk.hex").chmod(0o600)
    (tmp_path / "exists.csv").write_text("keep me\n")
    (tmp_path / "plain.csv").write_text(f"{make_serial(305)},{secrets.token_hex(20)},hotp,6,0\n")
    (tmp_path / "plain.txt").write_text(f"otpauth://hotp/keyfob:{make_serial(306)}?secret={'A' * 32}&counter=0\n")
    (tmp_path / "huge.csv").write_text(f"{make_serial(307)},{secrets.token_hex(20)},hotp,6,{2**63}\n")
    seedless = "otpauth://hotp/keyfob:" + make_serial(304) + "?secret=" + "A" * 32  # no counter
    spaced = "otpauth://totp/keyfob:John%20Smith?secret=" + "A" * 32
    flag = "--i-understand-this-copies-the-seed"
    cases = [
        (("token", "import", enc, "--key", bytes(16).hex()), "cannot decrypt"),
        (("token", "import", enc), "encrypted"),
        (("token", "import", tmp_path / "bad-mac.pskc", "--psk-file", tmp_path / "psk.hex"), "MAC"),
        (("token", "import", tmp_path / "truncated.pskc", "--key", PSK.hex()), "not well-formed XML"),
        (("token", "import", tmp_path / "xxe.pskc"), "document type declaration"),
        (("token", "import", tmp_path / "short.pskc"), "at least 16 bytes"),
        (("token", "import", tmp_path / "bad-line.csv"), "line 3"),
        (("token", "import", tmp_path / "one-known.csv"), "already in the inventory"),
        (("token", "import", enc, "--key", "abcd"), "--key"),
        (("token", "import", enc, "--key", PSK.hex(), "--passphrase", "x"), "only one of"),
        (("token", "import", seedless), "counter"),
        (("token", "import", spaced), "whitespace"),
        (("token", "import", tmp_path / "missing.pskc"), "missing.pskc"),
        (("token", "export", "--format", "csv", "--out", tmp_path / "o.csv"), "--plain"),
        (
            ("token", "export", "--format", "uri", "--out", tmp_path / "o.txt", "--key", PSK.hex()),
            "encrypted",
        ),
        (("token", "export", "--out", tmp_path / "o.pskc"), "PSKC"),
        (("token", "export", "--out", tmp_path / "o.pskc", "--plain", "--key", PSK.hex()), "PSKC"),
        (("token", "export", "--format", "csv", "--out", tmp_path / "exists.csv", "--plain"), "exists"),
        (("token", "export", "--out", tmp_path / "no" / "dir.pskc", "--plain"), "cannot write"),
        (("token", "export", make_serial(999), "--out", tmp_path / "o.pskc", "--plain"), "unknown token"),
        (("token", "export", "KF12", "--out", tmp_path / "o.pskc", "--plain"), "not a keyfob serial"),
        (("token", "twin", recs[0].serial), flag),
        (("token", "import", tmp_path / "plain.csv", "--key", PSK.hex()), "never encrypted"),
        (("token", "import", tmp_path / "plain.txt", "--passphrase", PASSPHRASE), "never encrypted"),
        (("token", "import", tmp_path / "huge.csv"), "0 .. 2**63-1"),
    ]
    before = v.dump()
    listed = v.tokens()
    for args, needle in cases:
        refused = needle == "already in the inventory"  # a name taken: refused, not bad input
        err = assert_one_clear_line(v(*args), *(r.secret for r in recs), code=1 if refused else 2)
        assert needle in err, (args, err)
    assert v.dump() == before and v.tokens() == listed
    assert (tmp_path / "exists.csv").read_text() == "keep me\n"
    assert not any((tmp_path / n).exists() for n in ("o.csv", "o.txt", "o.pskc"))


@dbs.sqlite_only
def test_a_pre_shared_key_file_others_can_read_is_refused(tmp_path, server):
    recs = five_tokens()
    v = server("v").setup("gus")
    enc = tmp_path / "enc.pskc"
    write_pskc(enc, recs, key=PSK)
    psk = tmp_path / "psk.hex"
    psk.write_text(PSK.hex() + "\n")
    before = v.dump()
    for mode in (0o644, 0o640, 0o604, 0o620):
        psk.chmod(mode)
        err = assert_one_clear_line(v("token", "import", enc, "--psk-file", psk), *(r.secret for r in recs))
        assert "read by others" in err and "chmod 600" in err and str(psk) in err, (oct(mode), err)
        assert PSK.hex() not in err.lower()
    assert v.dump() == before
    psk.chmod(0o600)  # the same file, owner-only: accepted
    v.ok("token", "import", enc, "--psk-file", psk)
    assert sorted(v.tokens()) == sorted(r.serial for r in recs)


def test_export_names_tokens_and_skips_lost_and_revoked(tmp_path, server):
    recs = five_tokens()
    v = server("v").setup("fay")
    write_pskc(tmp_path / "p.pskc", recs, plain=True)
    v.ok("token", "import", tmp_path / "p.pskc")
    v.ok("token", "link", "fay", recs[1].serial, code(recs[1], recs[1].counter))
    v.ok("token", "lost", recs[1].serial)
    v.ok("token", "revoke", recs[2].serial)
    out = tmp_path / "all.csv"
    r = v.ok("token", "export", "--format", "csv", "--out", out, "--plain", "--json")
    left = sorted(r.serial for r in recs if r.serial not in (recs[1].serial, recs[2].serial))
    assert json.loads(r.stdout)["exported"] == left
    assert json.loads(r.stdout)["protection"] == "plain"
    # naming tokens: only those, typed loosely; a lost one named is refused
    named = tmp_path / "two.txt"
    lower = recs[0].serial.lower()
    r = v.ok("token", "export", lower, recs[4].serial, "--format", "uri", "--out", named, "--plain")
    lines = named.read_text().splitlines()
    assert sorted(pyotp.parse_uri(x).name for x in lines) == sorted([recs[0].serial, recs[4].serial])
    err = assert_one_clear_line(
        v("token", "export", recs[1].serial, "--out", tmp_path / "lost.pskc", "--plain"), code=1
    )
    assert "lost" in err
    # replacing a file needs --force
    v.ok("token", "export", "--format", "csv", "--out", out, "--plain", "--force")
    assert len(v.audit("token-export")) == len(left) + 2 + len(left)


def test_library_export_renders_before_auditing(db):
    """A render that fails leaves no audit row; a good one returns its result after auditing."""
    v = Verifier.init(db, key=bytes(32), policy=Policy(password_profile="fast"))
    try:
        rec = five_tokens()[4]
        v.import_records([rec])

        def boom(records):
            raise RuntimeError("render failed")

        with pytest.raises(RuntimeError):
            v.export_records(render=boom)
        assert v.audit(action="token-export") == []
        out = v.export_records([" 2600123456789 "], render=lambda rs: [(r.serial, r.secret) for r in rs])
        assert out == [("2600123456789", rec.secret)]
        (row,) = v.audit(action="token-export")
        assert row.serial == "2600123456789" and row.result == "ok"
        with pytest.raises(BadInput):
            v.export_records([], render=boom)
        with pytest.raises(BadInput):
            v.export_records(action="token-link")
    finally:
        v.close()
