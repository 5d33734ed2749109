"""otpauth:// URIs (Key URI format): build, parse, files of URIs, and pyotp's reading of them."""

from __future__ import annotations

import base64
import hmac
import secrets
import stat
from pathlib import Path

import pyotp
import pytest
from keyfob.formats import FormatError, build_uri, parse_uri, read_seed_file, write_uris
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from oracles import hotp


def five_records() -> list[TokenRecord]:
    return [
        TokenRecord(make_serial(21), "hotp", "sha1", 6, secrets.token_bytes(20), counter=0),
        TokenRecord(make_serial(22), "hotp", "sha256", 8, secrets.token_bytes(32), counter=41),
        TokenRecord(make_serial(23), "totp", "sha1", 6, secrets.token_bytes(20), period=30),
        TokenRecord(make_serial(24), "totp", "sha256", 8, secrets.token_bytes(32), period=60),
        TokenRecord(make_serial(25), "hotp", "sha1", 8, secrets.token_bytes(17), counter=2**33),
    ]


# RFC 4226 appendix D secret and its 6-digit HOTP values for counters 0..2.
RFC4226_SECRET = b"12345678901234567890"
RFC4226_BASE32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"


def test_build_uri_exact_text():
    record = TokenRecord("KF000000011", "hotp", "sha1", 6, RFC4226_SECRET, counter=7)
    assert build_uri(record) == (
        f"otpauth://hotp/keyfob:KF000000011?secret={RFC4226_BASE32}&issuer=keyfob&algorithm=SHA1&digits=6&counter=7"
    )
    totp = TokenRecord("KF000000011", "totp", "sha256", 8, RFC4226_SECRET + b"\x01", period=60)
    uri = build_uri(totp, issuer="ACME Corp", account="alice@example.com")
    assert uri.startswith("otpauth://totp/ACME%20Corp:alice@example.com?secret=")
    assert uri.endswith("&issuer=ACME%20Corp&algorithm=SHA256&digits=8&period=60")
    assert "=" not in uri.split("secret=")[1].split("&")[0]  # base32 without padding


def test_parse_known_uri_and_rfc4226_codes():
    record = parse_uri(
        f"otpauth://hotp/ACME%20Co:john.doe@email.com?secret={RFC4226_BASE32}&issuer=ACME%20Co&counter=0"
    )
    assert (
        record.serial,
        record.manufacturer,
        record.mode,
        record.algorithm,
        record.digits,
        record.counter,
    ) == (
        "john.doe@email.com",
        "ACME Co",
        "hotp",
        "sha1",
        6,
        0,
    )
    assert hmac.compare_digest(record.secret, RFC4226_SECRET)
    assert [hotp(record.secret, c, 6, "sha1") for c in range(3)] == ["755224", "287082", "359152"]


def test_round_trip_and_pyotp_agree(tmp_path):
    records = five_records()
    for record in records:
        uri = build_uri(record)
        parsed = parse_uri(uri)
        assert (
            parsed.serial,
            parsed.mode,
            parsed.algorithm,
            parsed.digits,
            parsed.counter,
            parsed.period,
        ) == (
            record.serial,
            record.mode,
            record.algorithm,
            record.digits,
            record.counter,
            record.period,
        )
        assert hmac.compare_digest(parsed.secret, record.secret)
        assert parsed.manufacturer == "keyfob"
        otp = pyotp.parse_uri(uri)
        if record.mode == "hotp":
            # pyotp's HOTP.at(k) is the code k steps after the URI's counter.
            for k in range(3):
                assert otp.at(k) == hotp(record.secret, record.counter + k, record.digits, record.algorithm)
        else:
            for moment in (0, 59, 1_700_000_000, 2_000_000_000):
                want = hotp(record.secret, moment // record.period, record.digits, record.algorithm)
                assert otp.at(moment) == want
    # The same five as a file of URIs, through the format detection.
    path = tmp_path / "twins.txt"
    write_uris(path, records)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    got = read_seed_file(path)
    assert [r.serial for r in got] == [r.serial for r in records]
    assert all(hmac.compare_digest(a.secret, b.secret) for a, b in zip(got, records, strict=True))


def test_defaults_and_lenient_spellings():
    secret = secrets.token_bytes(20)
    b32 = base64.b32encode(secret).decode().lower().rstrip("=")
    record = parse_uri(f"  OTPAUTH://TOTP/alice?secret={b32}  ")
    assert (record.serial, record.mode, record.algorithm, record.digits, record.period) == (
        "alice",
        "totp",
        "sha1",
        6,
        30,
    )
    assert record.manufacturer == "unknown"
    assert hmac.compare_digest(record.secret, secret)
    padded = base64.b32encode(secret).decode()
    assert parse_uri(f"otpauth://totp/X:%20bob?secret={padded}&algorithm=sha256").serial == "bob"


BAD_URIS = {
    "scheme": ("https://totp/x?secret={s}", "not an otpauth"),
    "type": ("otpauth://motp/x?secret={s}", "hotp or totp"),
    "no account": ("otpauth://totp/Issuer:?secret={s}", "no account"),
    "no secret": ("otpauth://totp/x?issuer=a", "'secret' is required"),
    "bad secret": ("otpauth://totp/x?secret={s}189", "not base32"),
    "hotp without counter": ("otpauth://hotp/x?secret={s}", "'counter' is required"),
    "issuer mismatch": ("otpauth://totp/A:x?secret={s}&issuer=B", "differ"),
    "sha384": ("otpauth://totp/x?secret={s}&algorithm=SHA384", "SHA1, SHA256 or SHA512"),
    "digits 7": ("otpauth://totp/x?secret={s}&digits=7", "digits must be 6 or 8"),
    "period 45": ("otpauth://totp/x?secret={s}&period=45", "period must be 30 or 60"),
    "counter text": ("otpauth://hotp/x?secret={s}&counter=ten", "whole number"),
    "twice": ("otpauth://totp/x?secret={s}&secret={s}", "more than once"),
    "three-byte seed": ("otpauth://totp/x?secret=BOWV4", "at least 16 bytes"),
}


@pytest.mark.parametrize("case", sorted(BAD_URIS))
def test_bad_uris(case):
    secret = secrets.token_bytes(20)
    b32 = base64.b32encode(secret).decode().rstrip("=")
    template, message = BAD_URIS[case]
    with pytest.raises(FormatError, match=message) as caught:
        parse_uri(template.format(s=b32))
    assert b32 not in str(caught.value)
    assert "BOWV4" not in str(caught.value)


def test_file_of_uris_bad_line_is_numbered(tmp_path):
    records = five_records()
    lines = ["# twins for the help desk", ""] + [build_uri(r) for r in records]
    lines.insert(4, "otpauth://totp/broken?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&digits=9")
    path = tmp_path / "uris.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError) as caught:
        read_seed_file(path)
    assert str(caught.value).startswith(f"{path} line 5: ")
    assert "digits must be 6 or 8" in str(caught.value)


def test_build_refuses_colon_in_issuer():
    record = five_records()[0]
    with pytest.raises(FormatError, match="issuer"):
        build_uri(record, issuer="a:b")


def test_uri_detected_after_comments_but_csv_otherwise(tmp_path):
    record = five_records()[2]
    path = tmp_path / "one.txt"
    path.write_text(f"\n# one twin\n{build_uri(record)}\n")
    (got,) = read_seed_file(path)
    assert got.serial == record.serial
    path.write_text(f"{record.serial},{record.secret.hex()},totp,6,30\n{build_uri(record)}\n")
    with pytest.raises(FormatError, match="line 2: expected 5 fields"):
        read_seed_file(path)


def test_pyotp_reads_built_uri_labels():
    record = five_records()[3]
    otp = pyotp.parse_uri(build_uri(record, issuer="ACME Corp", account="alice@example.com"))
    assert (otp.name, otp.issuer, otp.digits, otp.interval) == ("alice@example.com", "ACME Corp", 8, 60)


def test_path_type_is_accepted(tmp_path):
    path = Path(tmp_path) / "p.txt"
    write_uris(str(path), five_records())
    assert len(read_seed_file(str(path))) == 5
