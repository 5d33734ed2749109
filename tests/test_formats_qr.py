"""QR codes of otpauth URIs: PNG, SVG and terminal renderings decode (zxing-cpp) to the exact URI."""

from __future__ import annotations

import re
import secrets
import stat
from pathlib import Path

import defusedxml.ElementTree
import pyotp
import pytest
import zxingcpp
from keyfob.formats import FormatError, build_uri, terminal_qr, write_qr
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from oracles import hotp
from PIL import Image

# A QR decoder that knows nothing of segno: what a phone camera app would do.


def decode(image: Image.Image) -> str:
    results = [r for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.BarcodeFormat.QRCode]
    assert len(results) == 1, "expected exactly one QR code in the image"
    return results[0].text


def modules_to_image(rows: list[list[bool]], scale: int = 6, quiet: int = 4) -> Image.Image:
    """Dark modules (True) as black squares on white, with a quiet zone around."""
    height, width = len(rows), max(len(r) for r in rows)
    image = Image.new("L", ((width + 2 * quiet) * scale, (height + 2 * quiet) * scale), 255)
    for y, row in enumerate(rows):
        for x, dark in enumerate(row):
            if dark:
                x0, y0 = (x + quiet) * scale, (y + quiet) * scale
                image.paste(0, (x0, y0, x0 + scale, y0 + scale))
    return image


def svg_to_modules(svg: bytes) -> list[list[bool]]:
    """Rasterize segno's SVG: one path of unit-wide horizontal strokes (M/m moves, h draws)."""
    root = defusedxml.ElementTree.fromstring(svg, forbid_dtd=True)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    path = root.find("{http://www.w3.org/2000/svg}path")
    scale = float(re.fullmatch(r"scale\(([\d.]+)\)", path.get("transform")).group(1))
    size = int(float(root.get("width")) / scale)
    rows = [[False] * size for _ in range(size)]
    x = y = 0.0
    for command, a, b in re.findall(r"([MmHh])\s*(-?[\d.]+)(?:[ ,](-?[\d.]+))?", path.get("d")):
        if command == "M":
            x, y = float(a), float(b)
        elif command == "m":
            x, y = x + float(a), y + float(b)
        else:
            end = float(a) if command == "H" else x + float(a)
            for column in range(int(min(x, end)), int(max(x, end))):
                rows[int(y)][column] = True
            x = end
    return rows


def terminal_to_modules(text: str) -> list[list[bool]]:
    """Undo the half-block rendering: each character is two modules, upper and lower; blocks are light."""
    upper_light = {"█": (True, True), "▀": (True, False), "▄": (False, True), " ": (False, False)}
    rows: list[list[bool]] = []
    for line in text.splitlines():
        if not line:
            continue
        top, bottom = [], []
        for char in line:
            assert char in upper_light, f"unexpected character {char!r} in the terminal QR code"
            up, down = upper_light[char]
            top.append(not up)
            bottom.append(not down)
        rows += [top, bottom]
    return rows


def twin_uri() -> tuple[TokenRecord, str]:
    record = TokenRecord(make_serial(31), "totp", "sha256", 8, secrets.token_bytes(32), period=30)
    return record, build_uri(record, issuer="keyfob", account=record.serial)


def assert_same_codes(uri: str, record: TokenRecord) -> None:
    otp = pyotp.parse_uri(uri)
    for moment in (0, 1_700_000_000, 2_000_000_000):
        assert otp.at(moment) == hotp(record.secret, moment // record.period, record.digits, record.algorithm)


def test_png_decodes_to_the_exact_uri(tmp_path):
    record, uri = twin_uri()
    path = tmp_path / "twin.png"
    write_qr(path, uri)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with Image.open(path) as image:
        assert image.format == "PNG"
        decoded = decode(image.convert("L"))
    assert decoded == uri
    assert_same_codes(decoded, record)


def test_hotp_png_decodes_too(tmp_path):
    record = TokenRecord(make_serial(32), "hotp", "sha1", 6, secrets.token_bytes(20), counter=12345)
    uri = build_uri(record)
    path = tmp_path / "hotp.PNG"
    write_qr(path, uri, scale=3)
    with Image.open(path) as image:
        decoded = decode(image.convert("L"))
    assert decoded == uri
    assert pyotp.parse_uri(decoded).at(0) == hotp(record.secret, 12345, 6, "sha1")


def test_svg_decodes_to_the_exact_uri(tmp_path):
    record, uri = twin_uri()
    path = tmp_path / "twin.svg"
    write_qr(path, uri)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    decoded = decode(modules_to_image(svg_to_modules(path.read_bytes())))
    assert decoded == uri
    assert_same_codes(decoded, record)


def test_terminal_rendering_decodes_to_the_exact_uri():
    record, uri = twin_uri()
    text = terminal_qr(uri)
    assert "\x1b" not in text  # plain text, no escape sequences
    decoded = decode(modules_to_image(terminal_to_modules(text)))
    assert decoded == uri
    assert_same_codes(decoded, record)


def test_unknown_suffix_is_refused(tmp_path):
    _, uri = twin_uri()
    with pytest.raises(FormatError, match=r"\.png or \.svg"):
        write_qr(tmp_path / "twin.jpg", uri)
    assert list(Path(tmp_path).iterdir()) == []
