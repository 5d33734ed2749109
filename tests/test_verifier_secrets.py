"""Acceptance 6: after a whole run (import, link, logins right and wrong, resync, lockout, lost
token, backup codes, bad input, CLI commands), neither the database (the SQLite file with its WAL;
PostgreSQL's data files, write-ahead log and server log) nor the logs hold a seed (raw, hex,
base32, base64), a password, or a code that was typed; nor do the CLI's output and the messages
of the errors raised on the way. SQL statement logging with bound parameters is switched on, so
even that must be clean. The key that seals the seeds is not in the database either (a copy of
the database alone reveals no seed)."""

import base64
import logging
import re

import pyotp
import pytest
from click.testing import CliRunner
from keyfob.cli import main
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.verifier import Policy, Verifier, VerifierError

SEEDS = {
    "hotp6": (b"\x8a\x01seed-for-secret-test\x7f", "sha1", 6),
    "hotp8": (bytes(range(200, 232)), "sha256", 8),
    "totp": (b"another secret seed for totp!!", "sha1", 6),
}
PASSWORDS = ["Tr0ub4dor&3 ends 2024", "second user pw 77"]


class Clock:
    t = 1_750_000_000.0

    def __call__(self):
        return self.t


def spaced(seed: bytes) -> str:
    """Base32 in groups of four, as authenticator apps show a seed for typing."""
    b32 = base64.b32encode(seed).decode().rstrip("=")
    return " ".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def forms(seed: bytes) -> list[bytes]:
    b32 = base64.b32encode(seed)
    out = [
        spaced(seed).encode(),
        spaced(seed).lower().encode(),
        seed,
        seed.hex().encode(),
        seed.hex().upper().encode(),
        b32,
        b32.rstrip(b"="),
        b32.lower(),
        base64.b64encode(seed),
        base64.urlsafe_b64encode(seed),
    ]
    return out + [f.decode("latin-1").encode("utf-16-le") for f in out[1:]]


def test_no_secret_in_database_or_logs(tmp_path, db, databases, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")  # SQL with bound parameters (restored after)
    clock = Clock()
    v = Verifier.init(db, key_file=tmp_path / "v.key", policy=Policy(password_profile="fast"), clock=clock)
    serials = {name: make_serial(900 + i) for i, name in enumerate(SEEDS)}
    v.import_records(
        [
            TokenRecord(serials[n], "totp" if n == "totp" else "hotp", algo, digits, seed)
            for n, (seed, algo, digits) in SEEDS.items()
        ]
    )
    v.add_user("sam", PASSWORDS[0])
    v.add_user("tia", PASSWORDS[1])
    refs = {
        n: (pyotp.TOTP if n == "totp" else pyotp.HOTP)(
            base64.b32encode(seed).decode(), digits=digits, digest=getattr(__import__("hashlib"), algo)
        )
        for n, (seed, algo, digits) in SEEDS.items()
    }
    typed: list[str] = []

    def code(name, at):
        c = refs[name].at(at)
        typed.append(c)
        return c

    assert v.link("sam", serials["hotp6"], code("hotp6", 0))
    assert v.link("sam", serials["hotp8"], code("hotp8", 0))
    assert v.link("tia", serials["totp"], code("totp", int(clock.t)))
    for i in range(1, 6):
        assert v.verify("sam", PASSWORDS[0] + code("hotp6", i))
        assert v.verify("sam", PASSWORDS[0], code("hotp8", i))
        assert not v.verify("sam", PASSWORDS[0] + code("hotp6", i))  # replay
        clock.t += 30
        assert v.verify("tia", PASSWORDS[1] + code("totp", int(clock.t)))
    assert not v.verify("sam", PASSWORDS[1] + code("hotp6", 6))  # other user's password
    assert v.resync(serials["hotp6"], code("hotp6", 400), code("hotp6", 401), wide=True)
    for i in range(10):
        assert not v.check_code("sam", code("hotp6", 1000 + i))
    v.unlock(serials["hotp6"])
    backups = v.mark_lost(serials["hotp6"])
    assert v.verify("sam", PASSWORDS[0] + backups[0])
    typed.extend(backups)

    # bad input: refused with a message that repeats none of it (a seed pasted into the serial box,
    # as authenticator apps show it: base32 in groups of four; a code with a typo; no password)
    hotp8_seed = SEEDS["hotp8"][0]
    pasted = [spaced(seed) for seed, _, _ in SEEDS.values()] + [
        hotp8_seed.hex() + "00",
        "KF" + hotp8_seed.hex()[:9],
    ]
    errors = []
    bad_calls = [lambda p=p: v.link("tia", p, code("totp", int(clock.t))) for p in pasted]
    bad_calls += [lambda: v.resync(pasted[1], code("hotp8", 50), code("hotp8", 51))]
    for call in bad_calls:
        with pytest.raises(VerifierError) as exc:
            call()
        errors.append(str(exc.value))
    # malformed logins are refusals (audited), not errors: their Result holds nothing typed either
    for call in (
        lambda: v.check_code("sam", code("hotp8", 7) + "x"),
        lambda: v.check_code("sam", code("hotp8", 7)[:-1]),
        lambda: v.verify("sam", code("hotp8", 7)),  # the code alone, the password forgotten
        lambda: v.verify("tia", PASSWORDS[1], code("totp", int(clock.t)) + "0"),
    ):
        r = call()
        assert not r.accepted
        errors.append(repr(r))

    monkeypatch.setenv("KEYFOB_DB", db)
    monkeypatch.setenv("KEYFOB_KEY_FILE", str(tmp_path / "v.key"))
    monkeypatch.setenv("KEYFOB_ARGON2_PROFILE", "fast")
    monkeypatch.delenv("KEYFOB_KEY", raising=False)
    runner = CliRunner()
    cli_out = []
    totp_now = refs["totp"].now()  # the CLI's verifier runs on the real clock
    typed.append(totp_now)
    for args, stdin in [
        (["validate", "sam", "-"], PASSWORDS[0] + code("hotp8", 6) + "\n"),
        (["validate", "sam", "-"], PASSWORDS[0] + code("hotp8", 6) + "\n"),
        (["validate", "tia", "-", "--json"], PASSWORDS[1] + totp_now + "\n"),
        (["validate", "sam", "-"], PASSWORDS[0] + code("hotp8", 7) + "?\n"),
        (["token", "link", "tia", pasted[0], code("totp", int(clock.t))], None),
        (["token", "unlock", pasted[2]], None),
        (["user", "passwd", "tia", "--password-stdin"], "a new password 4 tia\n"),
        (["token", "list", "--json"], None),
        (["token", "list"], None),
        (["audit", "--json", "--limit", "10000"], None),
        (["audit", "--limit", "10000"], None),
        (["user", "list"], None),
    ]:
        r = runner.invoke(main, args, input=stdin)
        cli_out.append(r.output)
    PASSWORDS.append("a new password 4 tia")
    database = databases.on_disk(db)  # with the verifier still open: the SQLite WAL is still there
    v.close()

    stores = {
        "database": database,
        "database server log": databases.server_log(db).encode(),
        "logs": "\n".join(r.getMessage() for r in caplog.records).encode(),
        "cli output": "\n".join(cli_out).encode(),
        "error messages": "\n".join(errors).encode(),
    }
    assert len(caplog.records) > 100  # the logs really were captured
    assert all(s.encode() in database for s in serials.values())  # the right files were read
    assert all(e and "\n" not in e for e in errors)
    assert sum("error: " in out for out in cli_out) == 2  # the two bad CLI calls said why
    assert sum(out == "refused\n" for out in cli_out) == 2  # a replay and a malformed login: refused
    key_text = (tmp_path / "v.key").read_text().strip()
    for form in (
        key_text.encode(),
        base64.urlsafe_b64decode(key_text),
        base64.b64encode(base64.urlsafe_b64decode(key_text)),
    ):
        assert form not in database and form not in stores["logs"]
    checked = 0
    for where, blob in stores.items():
        for seed, _, _ in SEEDS.values():
            for f in forms(seed):
                assert f not in blob, f"a seed form is in the {where}"
        for pw in PASSWORDS:
            assert pw.encode() not in blob, f"a password is in the {where}"
            assert pw.encode("utf-16-le") not in blob
        for c in set(typed):
            if c.isdigit():
                # a code on its own, not a piece of a longer number (serials, timestamps)
                found = c.encode() in blob and re.search(rb"(?<![0-9])%s(?![0-9])" % c.encode(), blob)
                assert not found, f"a typed code is in the {where}"
            else:
                for form in (c, c.replace("-", ""), c.upper()):
                    assert form.encode() not in blob, f"a backup code is in the {where}"
            checked += 1
    assert checked == len(stores) * len(set(typed))
