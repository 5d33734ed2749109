"""The host's parts take their token parameters from the one table (keyfob.params): records, the
arithmetic (against pyotp), provisioning and its command line."""

import base64

import pyotp
import pytest
from click.testing import CliRunner
from keyfob import params
from keyfob.cli import main
from keyfob.otp import HotpKey, OtpError, hotp
from keyfob.provision import ProvisionError, new_record
from keyfob.records import RecordError, TokenRecord
from keyfob.verifier import rules

SEED = bytes(range(32))
TRIED = range(4, 11)


def record(**kw):
    fields = dict(serial="X1", mode="totp", algorithm="sha1", digits=6, secret=SEED, period=30) | kw
    return TokenRecord(**fields)


def accepted(make, values, errors):
    out = []
    for v in values:
        try:
            make(v)
        except errors:
            continue
        out.append(v)
    return out


def test_records_take_the_records_column():
    r = params.RECORDS
    assert accepted(lambda d: record(digits=d), TRIED, RecordError) == list(r.digits)
    assert accepted(lambda p: record(period=p), (15, 30, 45, 60, 90), RecordError) == list(r.periods)
    assert accepted(lambda a: record(algorithm=a), ("md5", "sha1", "sha256", "sha384", "sha512"), RecordError) == [
        *r.algorithms
    ]
    assert accepted(lambda m: record(mode=m), ("hotp", "totp", "motp"), RecordError) == list(r.modes)
    top = r.counter_max
    assert accepted(lambda c: record(mode="hotp", counter=c), (top, top + 1), RecordError) == [top]
    assert rules.MAX_COUNTER == top


def test_arithmetic_computes_the_code_digits_as_pyotp_does():
    assert accepted(lambda d: HotpKey(SEED, digits=d), TRIED, OtpError) == list(params.CODE_DIGITS)
    b32 = base64.b32encode(SEED).decode()
    for d in params.CODE_DIGITS:
        assert hotp(SEED, 7, d) == HotpKey(SEED, digits=d).code(7) == pyotp.HOTP(b32, digits=d).at(7)


def test_provisioning_makes_only_what_the_firmware_takes():
    k = params.KEYFOB
    algs = accepted(lambda a: new_record("KF000000013", algorithm=a), params.RECORDS.algorithms, ProvisionError)
    assert algs == list(k.algorithms)
    for a in k.algorithms:
        assert len(new_record("KF000000013", algorithm=a).secret) == params.SEED_LENGTHS[a]


@pytest.mark.parametrize(
    "option, values",
    [("--mode", "modes"), ("--algorithm", "algorithms"), ("--digits", "digits"), ("--period", "periods")],
)
def test_provision_command_offers_the_firmware_column(option, values):
    text = CliRunner().invoke(main, ["provision", "--help"], terminal_width=200).output
    line = next(ln for ln in text.splitlines() if ln.strip().startswith(option))
    want = "|".join(str(v) for v in getattr(params.KEYFOB, values))
    assert f"[{want}]" in line
