"""QR codes of otpauth URIs (ISO/IEC 18004), made by segno: PNG or SVG files and terminal text.

A QR code of an otpauth URI *is* the seed: files are written with mode 0600,
and the terminal rendering is returned as a string for the caller to show
(this library never prints).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import segno

from keyfob.formats._common import FormatError, write_private

KINDS = {".png": "png", ".svg": "svg"}
# Level M (15 % of the code may be damaged) suits a code shown on a screen or
# printed once; segno raises it further when the data leaves room.
ERROR_LEVEL = "m"


def make_qr(uri: str) -> segno.QRCode:
    """The QR code (never a Micro QR code: authenticator apps do not read those)."""
    return segno.make(uri, error=ERROR_LEVEL, micro=False)


def write_qr(path: str | os.PathLike[str], uri: str, scale: int = 8, border: int = 4) -> None:
    """Write the QR code of ``uri`` as PNG or SVG, chosen by the file suffix."""
    kind = KINDS.get(Path(path).suffix.lower())
    if kind is None:
        raise FormatError(f"{os.fspath(path)}: a QR code file must end in .png or .svg")
    out = io.BytesIO()
    make_qr(uri).save(out, kind=kind, scale=scale, border=border)
    write_private(path, out.getvalue())


def terminal_qr(uri: str, border: int = 4) -> str:
    """The QR code as text for a terminal: Unicode half blocks, two modules per character cell.

    Light modules are drawn as blocks, so on the usual light-on-dark terminal
    the code shows dark-on-light as scanners expect.
    """
    out = io.StringIO()
    make_qr(uri).terminal(out=out, border=border, compact=True)
    return out.getvalue()
