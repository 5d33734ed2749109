"""PSKC as vendors and RFC 6030 write it, and the edges every seed format shares.

The files are built here by hand after the figures of RFC 6030 (or with python-pskc), never copied
from a vendor: ``<Policy>`` (section 4.3.2), ``<TimeDrift>`` (section 4.3.4), strict base64
(xs:base64Binary), asymmetric key transport (section 6.3), OCRA, SHA-512 suites, manufacturer and
model, and empty files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from keyfob.formats import FormatError, read_seed_file


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# ----------------------------------------------------------------------------- empty files


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"  \n\t\r\n", b"\xef\xbb\xbf\n\n"])
@pytest.mark.parametrize("unlock", [{}, {"key": bytes(16)}, {"passphrase": "qwerty"}])
def test_an_empty_file_is_called_empty(tmp_path, content, unlock):
    with pytest.raises(FormatError) as err:
        read_seed_file(write(tmp_path, "seeds.pskc", content), **unlock)
    assert str(err.value) == f"{tmp_path / 'seeds.pskc'}: empty file"
