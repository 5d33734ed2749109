"""PSKC values checked strictly before python-pskc reads them, each error naming its element.

python-pskc decodes leniently: ``base64.b64decode`` drops trailing garbage and takes a hex string
(all hex digits are base64 letters) as a shorter garbage seed; ``int()`` takes ``1_000`` and
``+8``; a date is whatever dateutil can guess; and a bad value surfaces as a bare ``ValueError``
that names no element. So the parsed tree is walked once here first: binary values must be
strict ``xs:base64Binary``, numbers plain decimal, booleans ``true``/``false``/``1``/``0``,
dates ``xs:dateTime``. Messages name the element (its path of local names, e.g.
``Key/Data/Secret/PlainValue``) and the key package, and never repeat the value: a file with a
shifted field can put a seed anywhere.

It also refuses, by name, the one key transport keyfob cannot open: asymmetric (RFC 6030
section 6.3, the seeds encrypted to an X.509 certificate's RSA key).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from xml.etree.ElementTree import Element

from keyfob.formats._common import FormatError

_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
# A base64 value of 24 or more characters made of hex digits only is, in practice, always hex
# (for random bytes the odds are below 1e-11), and RFC 6030 wants base64 there.
_HEX_RE = re.compile(r"[0-9A-Fa-f]{24,}")
_UNSIGNED_RE = re.compile(r"[0-9]+")
_SIGNED_RE = re.compile(r"[+-]?[0-9]+")
_XML_SPACE_RE = re.compile(r"[ \t\r\n]+")
# xs:dateTime: ISO 8601's extended calendar form only (no week or ordinal dates, no basic form)
_DATETIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})?")

#: elements whose text is always binary (xs:base64Binary)
_BINARY = {"CipherValue", "ValueMAC", "ValueDigest", "IV", "PBESalt", "Specified", "X509Certificate"}
#: elements whose text is a whole number >= 0
_UNSIGNED = {"IterationCount", "KeyLength", "PBEIterationCount", "NumberOfTransactions"}
#: Data children (and legacy ``Data Name=...``) holding a number; TimeDrift may be negative
_NUMBER_DATA = {"Counter", "Time", "TimeInterval", "TimeDrift", "COUNTER", "TIME", "TIME_INTERVAL"}
_DATES = {"StartDate", "ExpiryDate", "Expiry"}
_UNSIGNED_ATTRS = {"Length", "length", "Min", "min", "Max", "max", "MaxFailedAttempts", "MinLength", "MaxLength"}
_BOOL_ATTRS = {"CheckDigits", "CheckDigit"}
_USAGE_ATTRS = {"OTP", "CR", "Integrity", "Encrypt", "Unlock"}
_ASYMMETRIC_RE = re.compile(r"#rsa[-_]", re.IGNORECASE)


def local(tag: object) -> str:
    """The element name without its namespace (``{urn:...}Key`` -> ``Key``)."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _strict_base64(text: str) -> str | None:
    """Why ``text`` is not strict xs:base64Binary (whitespace allowed), or None if it is."""
    value = _XML_SPACE_RE.sub("", text)
    if _HEX_RE.fullmatch(value):
        return "is hex, where RFC 6030 wants base64"
    if not _BASE64_RE.fullmatch(value) or len(value) % 4:
        return "is not valid base64"
    try:
        binascii.a2b_base64(value, strict_mode=True)
    except binascii.Error:
        return "is not valid base64"
    return None


def _date_problem(text: str) -> str | None:
    try:
        if _DATETIME_RE.fullmatch(text.strip()):
            datetime.fromisoformat(text.strip())  # a real day and time (no February 30)
            return None
    except ValueError:
        pass
    return "is not a date and time (xs:dateTime, e.g. 2026-01-31T00:00:00Z)"


def _value_problem(name: str, owner: str, text: str) -> str | None:
    """Why an element's text is malformed, or None (also None for elements not checked here).
    ``owner`` is what a PlainValue/Value holds: its parent's name (or legacy Data Name)."""
    if name in _BINARY:
        return _strict_base64(text)
    if name in ("PlainValue", "Value"):
        if owner.lower() == "secret":
            return _strict_base64(text)
        if owner in _NUMBER_DATA:
            pattern = _SIGNED_RE if owner == "TimeDrift" else _UNSIGNED_RE
            # python-pskc also reads numbers written as base64 (old draft-era files): strictly here.
            if pattern.fullmatch(text.strip()) or _strict_base64(text) is None:
                return None
            return "is not a whole number"
        return None
    if name in _UNSIGNED:
        return None if _UNSIGNED_RE.fullmatch(text.strip()) else "is not a whole number"
    if name in _DATES:
        return _date_problem(text)
    return None


def _attribute_problem(element_name: str, attr: str, value: str) -> str | None:
    if attr in _UNSIGNED_ATTRS and element_name in ("ResponseFormat", "ChallengeFormat", "PINPolicy"):
        return None if _UNSIGNED_RE.fullmatch(value.strip()) else "is not a whole number"
    if (attr in _BOOL_ATTRS and element_name in ("ResponseFormat", "ChallengeFormat")) or (
        attr in _USAGE_ATTRS and element_name == "Usage"
    ):
        return None if value.strip().lower() in ("true", "false", "1", "0") else "is not true or false"
    return None


def _walk(element: Element, path: tuple[str, ...]) -> Iterator[tuple[Element, tuple[str, ...], Element]]:
    """Every element below ``element``: (element, its path of local names, its parent)."""
    for child in element:
        child_path = (*path, local(child.tag))
        yield child, child_path, element
        yield from _walk(child, child_path)


def _serial(package: Element) -> str:
    for child, path, _ in _walk(package, ()):
        if path == ("DeviceInfo", "SerialNo") or path == ("DeviceId", "SerialNo"):
            return (child.text or "").strip()
    return ""


def package_label(where: str, number: int, serial: str) -> str:
    """How messages name key package ``number`` of the file ``where`` (the serial, if it has one)."""
    return f"{where}: key package {number}" + (f" (serial {serial})" if serial else "")


def refuse_asymmetric(root: Element, where: str) -> None:
    """RFC 6030 section 6.3 (seeds encrypted to a certificate's RSA key): refused by name, before
    anything asks for a pre-shared key or a passphrase that could never open the file."""
    for element, path, _ in _walk(root, ()):
        name = path[-1]
        algorithm = element.get("Algorithm") or element.get("algorithm") or ""
        if (name == "X509Data" and "EncryptionKey" in path) or (
            name in ("EncryptionMethod", "EncryptionScheme", "EncryptionKey") and _ASYMMETRIC_RE.search(algorithm)
        ):
            raise FormatError(
                f"{where}: asymmetric key transport (RFC 6030 section 6.3, seeds encrypted to a "
                "certificate) is not supported: ask for the file encrypted with a pre-shared key or a passphrase"
            )


def check_values(root: Element, where: str) -> None:
    """Raise FormatError for the first malformed value in the PSKC document ``root``."""
    refuse_asymmetric(root, where)
    problem = _first(root, where, _value_problem, _attribute_problem)
    if problem:
        raise FormatError(problem)


def _unreadable(read: Callable[[str], object], text: str) -> str | None:
    try:
        read(text)
    except (ValueError, TypeError, OverflowError):
        return "cannot be read"
    return None


def _read_value(name: str, owner: str, text: str) -> str | None:
    """Whether python-pskc's own readers (lenient, but not everything passes) take an element's text."""
    import dateutil.parser
    from pskc.parser import plain2int

    if name in _BINARY or (name in ("PlainValue", "Value") and owner.lower() == "secret"):
        return _unreadable(base64.b64decode, text)
    if name in ("PlainValue", "Value") and owner in _NUMBER_DATA:
        return _unreadable(plain2int, text)
    if name in _UNSIGNED:
        return _unreadable(int, text)
    if name in _DATES:
        return _unreadable(dateutil.parser.parse, text)
    return None


def _read_attribute(element_name: str, attr: str, value: str) -> str | None:
    if attr in _UNSIGNED_ATTRS and element_name in ("ResponseFormat", "ChallengeFormat", "PINPolicy"):
        return _unreadable(int, value)
    if attr in _BOOL_ATTRS | _USAGE_ATTRS and value.lower() not in ("1", "true", "0", "false"):
        return "cannot be read"
    return None


def name_unreadable(root: Element, where: str) -> str | None:
    """The message naming the first element python-pskc cannot read, or None: what is said when
    python-pskc fails on a value that :func:`check_values` let through (none is known to)."""
    return _first(root, where, _read_value, _read_attribute)


def _first(root: Element, where: str, text_problem, attribute_problem) -> str | None:
    """The first problem found in ``root``, as a message naming its key package and element."""
    number = 0
    for top in root:
        top_name = local(top.tag)
        in_package = top_name in ("KeyPackage", "Device")
        if in_package:
            number += 1
            label = package_label(where, number, _serial(top))
        else:
            label = where
        for element, path, parent in _walk(top, (top_name,)):
            shown = "/".join(path[1:] if in_package else path)
            name = path[-1]
            # legacy <Data Name="SECRET"><Value>: the Name attribute says what the value is
            owner = (parent.get("Name") or "").upper() if local(parent.tag) == "Data" else ""
            owner = "Secret" if owner == "SECRET" else owner or local(parent.tag)
            problem = text_problem(name, owner, element.text or "")
            if problem:
                return f"{label}: {shown} {problem}"
            for attr, value in element.attrib.items():
                problem = attribute_problem(name, local(attr), value)
                if problem:
                    return f"{label}: {shown}@{local(attr)} {problem}"
    return None
