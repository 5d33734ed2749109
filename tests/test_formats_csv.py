"""OATH CSV seed files: serial, seed (hex or base32), type, digits, counter|period."""

from __future__ import annotations

import base64
import hmac
import secrets
import stat
from pathlib import Path

import pytest
from keyfob.formats import FormatError, read_seed_file, write_csv
from keyfob.formats.csvfile import format_csv, parse_csv
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from oracles import hotp, pyotp_code


def five_records() -> list[TokenRecord]:
    return [
        TokenRecord(make_serial(11), "hotp", "sha1", 6, secrets.token_bytes(20), counter=0),
        TokenRecord(make_serial(12), "hotp", "sha256", 8, secrets.token_bytes(32), counter=41),
        TokenRecord(make_serial(13), "totp", "sha1", 6, secrets.token_bytes(20), period=30),
        TokenRecord(make_serial(14), "totp", "sha1", 8, secrets.token_bytes(32), period=60),
        TokenRecord(make_serial(15), "hotp", "sha256", 8, secrets.token_bytes(20), counter=2**33),
    ]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_round_trip(tmp_path):
    records = five_records()
    path = tmp_path / "tokens.csv"
    write_csv(path, records)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert lines[0] == "serial,seed,type,digits,counter/period,algorithm"
    assert lines[2] == f"{records[1].serial},{records[1].secret.hex()},hotp,8,41,sha256"
    got = read_seed_file(path)
    assert len(got) == 5
    for a, b in zip(got, records, strict=True):
        assert (a.serial, a.mode, a.algorithm, a.digits, a.counter, a.period) == (
            b.serial,
            b.mode,
            b.algorithm,
            b.digits,
            b.counter,
            b.period,
        )
        assert hmac.compare_digest(a.secret, b.secret)
        for moment in (b.counter, b.counter + 1, 1_700_000_000):
            step = moment if b.mode == "hotp" else moment // b.period
            assert pyotp_code(a, moment) == hotp(b.secret, step, b.digits, b.algorithm)


def test_vendor_layout_without_header_hex_and_base32(tmp_path):
    """Five columns, no header, comments, blank lines, spaces, upper-case hex and base32 seeds."""
    s1, s2, s3 = secrets.token_bytes(20), secrets.token_bytes(32), secrets.token_bytes(20)
    text = (
        "# exported by a vendor tool\n"
        "\n"
        f"TOK-0001, {s1.hex().upper()}, HOTP, 6, 12\n"
        f"TOK-0002,{s2.hex()},totp,8,60\n"
        f"  TOK-0003 , {base64.b32encode(s3).decode().rstrip('=').lower()} , totp , 6 ,\n"
    )
    a, b, c = read_seed_file(write(tmp_path, "vendor.csv", text))
    assert (a.serial, a.mode, a.digits, a.counter, a.algorithm) == ("TOK-0001", "hotp", 6, 12, "sha1")
    assert (b.serial, b.mode, b.digits, b.period, b.algorithm) == ("TOK-0002", "totp", 8, 60, "sha256")
    assert (c.serial, c.mode, c.period, c.algorithm) == ("TOK-0003", "totp", 30, "sha1")
    for record, seed in ((a, s1), (b, s2), (c, s3)):
        assert hmac.compare_digest(record.secret, seed)
    assert pyotp_code(b, 1_111_111_109) == hotp(s2, 1_111_111_109 // 60, 8, "sha256")


def test_header_in_another_spelling_is_skipped():
    seed = secrets.token_bytes(20)
    (record,) = parse_csv(f"SerialNo;x,Seed,Type,Digits,Counter\nA1,{seed.hex()},hotp,6,0\n", "t.csv")
    assert record.serial == "A1"


BAD_LINES = {
    "too few fields": ("{serial},{hex},hotp,6", "expected 5 fields"),
    "too many fields": ("{serial},{hex},hotp,6,0,sha1,extra", "expected 5 fields"),
    "bad type": ("{serial},{hex},motp,6,0", "type (third field) must be hotp or totp"),
    "seed in type column": ("{serial},hotp,{hex},6,0", "type (third field)"),
    "not hex nor base32": ("{serial},{hex}xyz!,hotp,6,0", "neither hex nor base32"),
    "three-byte seed": ("{serial},0bad5e,hotp,6,0", "at least 16 bytes"),
    "seven digits": ("{serial},{hex},hotp,7,0", "digits must be 6 or 8"),
    "digits not a number": ("{serial},{hex},hotp,six,0", "digits must be a whole number"),
    "period 45": ("{serial},{hex},totp,6,45", "period must be 30 or 60"),
    "negative counter": ("{serial},{hex},hotp,6,-1", "counter must be in 0 .. 2**63-1"),
    "sha384 column": ("{serial},{hex},hotp,6,0,sha384", "algorithm (sixth field)"),
    "empty serial": (",{hex},hotp,6,0", "serial is empty"),
    # serial and seed columns swapped: the seed lands where the serial belongs
    "seed in serial column (hex)": ("{hex},{serial},hotp,6,0", "at least 16 bytes"),
    "seed in serial column (base32)": ("{b32},{serial},hotp,6,0", "at least 16 bytes"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_one_bad_line_fails_the_file_with_its_number(tmp_path, case):
    good = five_records()
    text = format_csv(good)  # header + 5 lines
    template, message = BAD_LINES[case]
    seed = secrets.token_bytes(20)
    b32 = base64.b32encode(seed).decode("ascii")
    bad = template.format(serial="BAD-1", hex=seed.hex(), b32=b32, hex64=secrets.token_bytes(64).hex())
    lines = text.splitlines()
    lines.insert(4, bad)  # becomes line 5 of the file
    path = write(tmp_path, "bad.csv", "\n".join(lines) + "\n")
    with pytest.raises(FormatError) as caught:
        read_seed_file(path)
    text_of_error = str(caught.value)
    assert text_of_error.startswith(f"{path} line 5: ")
    assert message in text_of_error
    for record in good:
        assert record.secret.hex() not in text_of_error
    assert seed.hex() not in text_of_error
    assert b32.rstrip("=") not in text_of_error
    assert "0bad5e" not in text_of_error


def test_empty_and_header_only_files(tmp_path):
    with pytest.raises(FormatError, match="empty file"):
        read_seed_file(write(tmp_path, "empty.csv", ""))
    for name, text in {
        "header.csv": "serial,seed,type,digits,counter\n",
        "blank.csv": "\n# x\n",
    }.items():
        with pytest.raises(FormatError, match="contains no tokens"):
            read_seed_file(write(tmp_path, name, text))


def test_duplicate_serials(tmp_path):
    seed = secrets.token_bytes(20).hex()
    text = f"X1,{seed},hotp,6,0\nX2,{seed},hotp,6,0\nX1,{seed},totp,6,30\n"
    with pytest.raises(FormatError, match="serial X1 appears more than once"):
        read_seed_file(write(tmp_path, "dup.csv", text))


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"S\xe9rie,00,hotp,6,0\n")
    with pytest.raises(FormatError, match="UTF-8"):
        read_seed_file(path)


def test_unwritable_place_is_a_format_error(tmp_path):
    with pytest.raises(FormatError, match="cannot write"):
        write_csv(tmp_path / "no" / "such" / "dir.csv", five_records())
