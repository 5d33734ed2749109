"""PSKC seed files (RFC 6030, Portable Symmetric Key Container), read and written with python-pskc.

Writing: one ``KeyPackage`` per token (RFC 6030 section 4) with ``DeviceInfo``
(manufacturer, serial number, model), a ``Key`` whose ``Algorithm`` is the
HOTP or TOTP profile URI (section 10), ``AlgorithmParameters`` with the hash
``Suite`` and the decimal ``ResponseFormat`` length, and ``Data`` with the
secret and the counter (HOTP) or time interval (TOTP).

The secret is encrypted (section 6) either with a pre-shared key (section
6.1: AES-CBC, with an HMAC-SHA1 ``ValueMAC`` over the ciphertext and the MAC
key itself encrypted, as in Figure 6) or with a key derived from a passphrase
(section 6.2: PBKDF2, RFC 8018, as in Figure 7). A file with the secrets in
the clear is written only when asked for explicitly.

Reading accepts what vendors ship: the RFC 6030 examples, Feitian, Yubico
(OATH-HOTP) and multiOTP style files (SHA-512 suites too). Untrusted XML is parsed by defusedxml
with document type declarations forbidden, so entity expansion and external
entities (XXE) fail before python-pskc sees the file; ``pskc_checks`` then holds
every value to its type strictly (base64, numbers, dates). Any problem with any
token fails the whole file: nothing is returned. Messages quote no text from the file but a
key package's serial number. The key's ``<Policy>`` is honoured (section 5): usage
other than OTP, or rules keyfob cannot enforce, refuse the key; its dates go into
the record for the verifier to judge (and are written back). ``<TimeDrift>`` becomes the
record's drift, and a TOTP record's drift is written as ``<TimeDrift>``.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from xml.etree import ElementTree

import defusedxml
import defusedxml.ElementTree
import pskc
from pskc.exceptions import DecryptionError, PSKCError
from pskc.key import EncryptedValue

from keyfob.formats._common import (
    UNKNOWN,
    FormatError,
    check_records,
    hash_from_name,
    hash_from_seed_length,
    read_key_file,
    write_private,
)
from keyfob.formats.pskc_checks import check_values, name_unreadable, package_label
from keyfob.params import DEFAULT_DIGITS, DEFAULT_PERIOD
from keyfob.records import RecordError, TokenRecord

ALGORITHM_URIS = {
    "hotp": "urn:ietf:params:xml:ns:keyprov:pskc:hotp",
    "totp": "urn:ietf:params:xml:ns:keyprov:pskc:totp",
}
SUITES = {"sha1": "HMAC-SHA1", "sha256": "HMAC-SHA256", "sha512": "HMAC-SHA512"}
AES_CBC = {16: "aes128-cbc", 24: "aes192-cbc", 32: "aes256-cbc"}

# PBKDF2-HMAC-SHA1 (the RFC 8018 default PRF). python-pskc 1.4 writes a
# non-default PRF as element text but reads it from an Algorithm attribute,
# so only the default PRF round-trips through python-pskc's own tools.
PBKDF2_ITERATIONS = 1_000_000
PBKDF2_SALT_BYTES = 16
# A hostile file could ask for years of PBKDF2 work.
MAX_PBKDF2_ITERATIONS = 20_000_000

PRE_SHARED_KEY_NAME = "keyfob transport key"
PASSPHRASE_KEY_NAME = "keyfob passphrase"

_PROFILE_RE = re.compile(r"[:#](hotp|totp)$", re.IGNORECASE)
_VALUE_FIELDS = ("secret", "counter", "time_offset", "time_interval", "time_drift")


def coerce_key(key: bytes | str, where: str) -> bytes:
    """A pre-shared AES key given as bytes or as hex text (16, 24 or 32 bytes)."""
    if isinstance(key, str):
        try:
            key = bytes.fromhex(re.sub(r"[\s:]", "", key))
        except ValueError:
            raise FormatError(f"{where}: the pre-shared key must be hex") from None
    if not isinstance(key, bytes | bytearray) or len(key) not in AES_CBC:
        raise FormatError(f"{where}: the pre-shared key must be 16, 24 or 32 bytes (AES-128/192/256)")
    return bytes(key)


# --------------------------------------------------------------------------- reading


def _safe_check(data: bytes, where: str) -> ElementTree.Element:
    """Parse with defusedxml first: no DTD at all, so no entities, no XXE, no billion laughs."""
    try:
        return defusedxml.ElementTree.fromstring(data, forbid_dtd=True)
    except defusedxml.DTDForbidden:
        raise FormatError(f"{where}: XML with a document type declaration (DTD) is refused") from None
    except defusedxml.EntitiesForbidden:
        raise FormatError(f"{where}: XML with entity declarations is refused") from None
    except defusedxml.ExternalReferenceForbidden:
        raise FormatError(f"{where}: XML with external references is refused") from None
    except LookupError:
        raise FormatError(f"{where}: the XML declaration names an unknown character encoding") from None
    except ElementTree.ParseError as exc:
        line, column = exc.position
        raise FormatError(
            f"{where}: not well-formed XML (truncated or damaged?) at line {line}, column {column}"
        ) from None


# python-pskc's messages that quote nothing from the file; any other (e.g. "Unsupported
# algorithm: 'x'", "Unsupported version 'x'") is replaced by the fixed text of its first words.
_FIXED_REASONS = {
    "No algorithm specified": "no encryption algorithm is given",
    "Invalid padding": "the decrypted value has invalid padding",
    "No key available": "no key to decrypt with",
    "Invalid key length": "the key has the wrong length for the encryption algorithm",
    "Incomplete PBKDF2 configuration": "the PBKDF2 parameters are incomplete",
    "MAC value does not match": "MAC value does not match",
    "Ciphertext length wrong": "the encrypted value has the wrong length",
    "IV does not match": "the key wrap check failed",
    "CMS key checksum error": "the key wrap check failed",
    "Missing KeyContainer": "no KeyContainer element",
    "Error parsing XML": "not well-formed XML",
}
_QUOTING_REASONS = (
    ("Unsupported version", "the PSKC version is not supported (only 1.0)"),
    ("Unsupported MAC algorithm", "the MAC algorithm is not supported"),
    ("Unsupported PRF", "the PBKDF2 pseudorandom function is not supported"),
    ("Pseudorandom function unsupported", "the PBKDF2 pseudorandom function is not supported"),
    ("Unsupported algorithm", "the encryption or key derivation algorithm is not supported"),
)


def _reason(exc: Exception) -> str:
    """What went wrong in python-pskc, in words that quote nothing from the file."""
    text = str(exc)
    if text in _FIXED_REASONS:
        return _FIXED_REASONS[text]
    for start, reason in _QUOTING_REASONS:
        if text.startswith(start):
            return reason
    return f"python-pskc refused it ({type(exc).__name__})"


def _has_encrypted_values(container: pskc.PSKC) -> bool:
    return any(
        isinstance(getattr(pskc_key, "_" + name, None), EncryptedValue)
        for pskc_key in container.keys
        for name in _VALUE_FIELDS
    )


def _fallback_key(container: pskc.PSKC, psk_file: str | os.PathLike[str], where: str) -> bytes | None:
    """The key in ``psk_file`` if the file needs a pre-shared key (encrypted, no key derivation)."""
    if container.encryption.derivation.algorithm or not _has_encrypted_values(container):
        return None
    if not os.path.exists(psk_file):
        raise FormatError(
            f"{where}: the seeds are encrypted with a pre-shared key, and there is no key file at "
            f"{os.fspath(psk_file)}: give the key, its file, or the passphrase"
        )
    return read_key_file(psk_file)


def _unlock(container: pskc.PSKC, key: bytes | str | None, passphrase: str | None, where: str) -> None:
    encryption = container.encryption
    if key is not None and passphrase is not None:
        raise FormatError(f"{where}: give either a pre-shared key or a passphrase, not both")
    if passphrase is not None:
        derivation = encryption.derivation
        if not derivation.algorithm:
            if _has_encrypted_values(container):
                raise FormatError(f"{where}: not protected by a passphrase (it needs a pre-shared key)")
            return  # a plain file: nothing to unlock
        if (derivation.pbkdf2_iterations or 0) > MAX_PBKDF2_ITERATIONS:
            raise FormatError(
                f"{where}: asks for {derivation.pbkdf2_iterations} PBKDF2 iterations "
                f"(more than {MAX_PBKDF2_ITERATIONS}), refused"
            )
        try:
            encryption.derive_key(passphrase)
        except PSKCError as exc:
            raise FormatError(f"{where}: cannot derive the key from the passphrase: {_reason(exc)}") from None
    elif key is not None:
        encryption.key = coerce_key(key, where)


def _profile(pskc_key: pskc.key.Key, what: str) -> str:
    algorithm = (pskc_key.algorithm or "").strip()
    if "ocra" in algorithm.lower() or (pskc_key.algorithm_suite or "").strip().upper().startswith("OCRA"):
        raise FormatError(f"{what}: OCRA (challenge-response, RFC 6287) keys are not supported")
    match = _PROFILE_RE.search(algorithm)
    if not match:
        raise FormatError(f"{what}: the key's algorithm is neither HOTP nor TOTP")
    return match.group(1).lower()


# RFC 6030 section 12.6, the Key Usage registry's initial values
_KEY_USAGES = {
    "OTP",
    "CR",
    "Encrypt",
    "Integrity",
    "Verify",
    "Unlock",
    "Decrypt",
    "KeyWrap",
    "Unwrap",
    "Derive",
    "Generate",
}


def _unix(moment: datetime | None) -> float | None:
    """Unix seconds of a PSKC date; one without a time zone is taken as UTC (xs:dateTime's usual Z)."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _validity(pskc_key: pskc.key.Key) -> tuple[float | None, float | None]:
    """The key's usable period: its Policy dates and its device's (DeviceInfo), the narrower of each."""
    device = pskc_key.device
    starts = [x for x in (_unix(pskc_key.policy.start_date), _unix(device.start_date)) if x is not None]
    ends = [x for x in (_unix(pskc_key.policy.expiry_date), _unix(device.expiry_date)) if x is not None]
    return (max(starts) if starts else None), (min(ends) if ends else None)


def _check_policy(pskc_key: pskc.key.Key, what: str) -> None:
    """RFC 6030 section 5: the key usage must include OTP, and a policy keyfob cannot enforce (or does
    not understand: "the recipient MUST assume that key usage is not permitted") refuses the key.
    The dates are not checked here: the verifier decides with its clock (see TokenRecord.valid_from)."""
    rules = pskc_key.policy
    if rules.unknown_policy_elements or not set(rules.key_usage) <= _KEY_USAGES:
        raise FormatError(f"{what}: its Policy has rules keyfob does not know (RFC 6030 section 5: not usable)")
    if rules.key_usage and "OTP" not in rules.key_usage:
        raise FormatError(f"{what}: its Policy does not allow OTP (KeyUsage), so it is not an OTP key")
    if rules.number_of_transactions is not None:
        raise FormatError(f"{what}: its Policy limits the uses (NumberOfTransactions), which keyfob does not count")
    if rules.pin_usage is not None and rules.pin_usage != "Local":
        raise FormatError(f"{what}: its Policy wants a PIN checked with the code, which keyfob does not do")


def _check_macs(pskc_key: pskc.key.Key, what: str) -> None:
    """RFC 6030 section 6.1.1: a value encrypted in CBC mode must carry a ValueMAC.

    python-pskc checks a MAC that is there but accepts a value without one, so
    a file whose MACs were stripped would otherwise pass.
    """
    for name in _VALUE_FIELDS:
        # python-pskc keeps the still-encrypted value in the underscored attribute.
        value = getattr(pskc_key, "_" + name, None)
        if isinstance(value, EncryptedValue):
            algorithm = (value.algorithm or pskc_key.device.pskc.encryption.algorithm or "").lower()
            if algorithm.endswith("-cbc") and not value.mac_value:
                raise FormatError(f"{what}: the encrypted {name} has no MAC (RFC 6030 section 6.1.1)")


#: the Data element of each value python-pskc decodes (or decrypts) only when it is read
_DATA_ELEMENTS = {"secret": "Secret", "counter": "Counter", "time_interval": "TimeInterval", "time_drift": "TimeDrift"}


def _data(pskc_key: pskc.key.Key, name: str, what: str):
    """One of the key's values, read now; one that cannot be decoded is named."""
    try:
        return getattr(pskc_key, name)
    except (ValueError, TypeError):
        raise FormatError(f"{what}: Key/Data/{_DATA_ELEMENTS[name]} cannot be read") from None


def _record(pskc_key: pskc.key.Key, what: str) -> TokenRecord:
    mode = _profile(pskc_key, what)
    _check_policy(pskc_key, what)
    _check_macs(pskc_key, what)
    secret = _data(pskc_key, "secret", what)
    if not secret:
        raise FormatError(f"{what}: has no secret (a key reference or derivation is not a seed)")
    if pskc_key.algorithm_suite:
        algorithm = hash_from_name(pskc_key.algorithm_suite)
        if algorithm is None:
            raise FormatError(f"{what}: the hash suite is not supported (only HMAC-SHA1, HMAC-SHA256 and HMAC-SHA512)")
    else:
        algorithm = hash_from_seed_length(len(secret))
    if (pskc_key.response_encoding or "DECIMAL").strip().upper() != "DECIMAL":
        raise FormatError(f"{what}: the response encoding is not supported (only DECIMAL)")
    if pskc_key.response_check:
        raise FormatError(f"{what}: responses with a Luhn check digit are not supported")
    valid_from, valid_until = _validity(pskc_key)
    return TokenRecord(
        serial=(pskc_key.serial or "").strip(),
        mode=mode,
        algorithm=algorithm,
        digits=pskc_key.response_length or DEFAULT_DIGITS,
        secret=bytes(secret),
        counter=(_data(pskc_key, "counter", what) or 0) if mode == "hotp" else 0,
        period=(_data(pskc_key, "time_interval", what) or DEFAULT_PERIOD) if mode == "totp" else DEFAULT_PERIOD,
        manufacturer=(pskc_key.manufacturer or "").strip() or UNKNOWN,
        model=(pskc_key.model or "").strip() or UNKNOWN,
        drift=(_data(pskc_key, "time_drift", what) or 0) if mode == "totp" else 0,
        valid_from=valid_from,
        valid_until=valid_until,
    )


def parse_pskc(
    data: bytes,
    where: str,
    key: bytes | str | None = None,
    passphrase: str | None = None,
    psk_file: str | os.PathLike[str] | None = None,
) -> list[TokenRecord]:
    """The tokens in a PSKC document (``where`` names it in error messages).

    ``psk_file``: a key file (see ``read_key_file``) to use when neither ``key`` nor ``passphrase``
    is given and the document needs a pre-shared key, e.g. where provisioning keeps its key."""
    root = _safe_check(data, where)
    check_values(root, where)
    try:
        container = pskc.PSKC(io.BytesIO(data))
    except PSKCError as exc:
        raise FormatError(f"{where}: not a PSKC file: {_reason(exc)}") from None
    except (ValueError, TypeError):
        # check_values holds every value python-pskc reads to its type first; should one still fail
        # to read, it is named all the same (and the file is refused if none can be)
        named = name_unreadable(root, where)
        raise FormatError(named or f"{where}: not a PSKC file: a value python-pskc cannot read") from None
    tried = ""
    if key is None and passphrase is None and psk_file is not None:
        key = _fallback_key(container, psk_file, where)
        tried = f" (tried the key file {os.fspath(psk_file)})" if key is not None else ""
    _unlock(container, key, passphrase, where)
    keys = container.keys
    if not keys:
        raise FormatError(f"{where}: contains no keys")
    records = []
    # numbered by KeyPackage, as pskc_checks numbers them (a package may hold more than one key)
    numbered = [(n, k) for n, device in enumerate(container.devices, start=1) for k in device.keys]
    for number, pskc_key in numbered:
        serial = (pskc_key.serial or "").strip()
        what = package_label(where, number, serial)
        if not serial:
            raise FormatError(f"{what}: has no serial number (DeviceInfo/SerialNo)")
        try:
            records.append(_record(pskc_key, what))
        except FormatError:
            raise
        except RecordError as exc:
            raise FormatError(f"{what}: {exc}") from None
        except DecryptionError as exc:
            if container.encryption.key is None:
                raise FormatError(
                    f"{where}: the seeds are encrypted: give the pre-shared key or the passphrase"
                ) from None
            raise FormatError(
                f"{what}: cannot decrypt (wrong key or passphrase, or the file was altered): {_reason(exc)}{tried}"
            ) from None
        except PSKCError as exc:
            raise FormatError(f"{what}: {_reason(exc)}") from None
    return records


# --------------------------------------------------------------------------- writing


def build_pskc(
    records: Iterable[TokenRecord],
    key: bytes | str | None = None,
    passphrase: str | None = None,
    plain: bool = False,
    where: str = "PSKC",
) -> bytes:
    """A PSKC document (bytes) for ``records``: encrypted with ``key`` or ``passphrase``.

    With neither, ``plain=True`` must be given to write the secrets in the clear.
    """
    items = check_records(records, where)
    if sum(x is not None for x in (key, passphrase)) + bool(plain) != 1:
        raise FormatError(
            f"{where}: choose exactly one of a pre-shared key, a passphrase, or plain=True (secrets in the clear)"
        )
    if passphrase is not None and not passphrase:
        raise FormatError(f"{where}: the passphrase is empty")
    container = pskc.PSKC()
    for record in items:
        fields: dict[str, object] = {
            "id": record.serial,
            "serial": record.serial,
            "manufacturer": record.manufacturer,
            "model": record.model,
            "algorithm": ALGORITHM_URIS[record.mode],
            "algorithm_suite": SUITES[record.algorithm],
            "response_encoding": "DECIMAL",
            "response_length": record.digits,
            "secret": bytes(record.secret),
        }
        if record.mode == "hotp":
            fields["counter"] = record.counter
        else:
            fields["time_interval"] = record.period
            if record.drift:  # what the verifier learned of the token's clock, for the next server
                fields["time_drift"] = record.drift
        # the key's dates, as the verifier holds them (it refuses logins past the ExpiryDate)
        if record.valid_from is not None:
            fields["policy.start_date"] = datetime.fromtimestamp(record.valid_from, UTC)
        if record.valid_until is not None:
            fields["policy.expiry_date"] = datetime.fromtimestamp(record.valid_until, UTC)
        container.add_key(**fields)
    if key is not None:
        aes_key = coerce_key(key, where)
        container.encryption.setup_preshared_key(
            key=aes_key, algorithm=AES_CBC[len(aes_key)], key_name=PRE_SHARED_KEY_NAME
        )
    elif passphrase is not None:
        container.encryption.setup_pbkdf2(
            passphrase,
            algorithm="aes128-cbc",
            key_name=PASSPHRASE_KEY_NAME,
            salt_length=PBKDF2_SALT_BYTES,
            iterations=PBKDF2_ITERATIONS,
        )
    out = io.BytesIO()
    container.write(out)
    return out.getvalue()


def write_pskc(
    path: str | os.PathLike[str],
    records: Iterable[TokenRecord],
    key: bytes | str | None = None,
    passphrase: str | None = None,
    plain: bool = False,
) -> None:
    """Write ``records`` as a PSKC file at ``path`` (mode 0600, replaced atomically)."""
    data = build_pskc(records, key=key, passphrase=passphrase, plain=plain, where=os.fspath(path))
    write_private(path, data)
