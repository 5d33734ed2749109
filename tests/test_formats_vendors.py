"""PSKC as vendors and RFC 6030 write it, and the edges every seed format shares.

The files are built here by hand after the figures of RFC 6030 (or with python-pskc), never copied
from a vendor: ``<Policy>`` (section 4.3.2), ``<TimeDrift>`` (section 4.3.4), strict base64
(xs:base64Binary), asymmetric key transport (section 6.3), OCRA, SHA-512 suites, manufacturer and
model, and empty files.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner
from keyfob.cli import main
from keyfob.formats import FormatError, read_seed_file

NS = "urn:ietf:params:xml:ns:keyprov:pskc"
HOTP = f"{NS}:hotp"
TOTP = f"{NS}:totp"
# A seed as some files write it (RFC 4226 appendix D's, in hex): planted in fields that are not
# seeds, it must never come back in a message.
PLANT = "3132333435363738393031323334353637383930"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def package(
    serial: str = "VX-1001",
    *,
    secret: str | None = None,
    algorithm: str = HOTP,
    parameters: str = '<ResponseFormat Length="6" Encoding="DECIMAL"/>',
    data: str = "<Counter><PlainValue>0</PlainValue></Counter>",
    policy: str = "",
    device: str = "<Manufacturer>oath.VX</Manufacturer><Model>VX-One</Model>",
) -> str:
    """One KeyPackage laid out as in RFC 6030 Figure 3 (DeviceInfo, CryptoModuleInfo, Key)."""
    secret = b64(secrets.token_bytes(20)) if secret is None else secret
    return f"""
  <KeyPackage>
    <DeviceInfo>{device}<SerialNo>{serial}</SerialNo></DeviceInfo>
    <CryptoModuleInfo><Id>CM_ID_001</Id></CryptoModuleInfo>
    <Key Id="{serial}" Algorithm="{algorithm}">
      <Issuer>Issuer</Issuer>
      <AlgorithmParameters>{parameters}</AlgorithmParameters>
      <Data>
        <Secret><PlainValue>{secret}</PlainValue></Secret>
        {data}
      </Data>{policy}
    </Key>
  </KeyPackage>"""


def container(*packages: str, head: str = "", version: str = "1.0") -> str:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="{version}" Id="batch-7" xmlns="{NS}"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">{head}{"".join(packages)}
</KeyContainer>
"""


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


@pytest.mark.parametrize("name", ["seeds.pskc", "seeds.csv", "uris.txt"])
def test_the_cli_calls_an_empty_file_empty(tmp_path, verifier_env, name):
    path = write(tmp_path, name, b"\xef\xbb\xbf\n")
    for extra in ([], ["--key", "00" * 16]):
        result = cli("token", "import", path, *extra)
        assert result.exit_code != 0
        assert f"{path}: empty file" in result.stderr
        assert "CSV" not in result.stderr


# ----------------------------------------------------------------------------- strict base64


def test_hex_where_base64_belongs_is_refused_with_the_element_named(tmp_path):
    """A 20-byte seed written in hex is 40 base64 letters: leniently that is a 30-byte garbage seed."""
    seed = secrets.token_bytes(20)
    good = read_seed_file(write(tmp_path, "good.pskc", container(package(secret=b64(seed)))))
    assert hmac.compare_digest(good[0].secret, seed)
    with pytest.raises(FormatError) as err:
        read_seed_file(write(tmp_path, "hex.pskc", container(package(secret=seed.hex()))))
    message = str(err.value)
    assert "key package 1 (serial VX-1001): Key/Data/Secret/PlainValue is hex, where RFC 6030 wants base64" in message
    assert seed.hex() not in message


@pytest.mark.parametrize(
    "spoil",
    [
        lambda text: text + "garbage",  # letters after the padding
        lambda text: text + "=",  # one '=' too many
        lambda text: text[:-1],  # padding cut short
        lambda text: text.replace("=", "") + "!",  # not a base64 letter
    ],
)
def test_trailing_garbage_and_bad_padding_are_refused(tmp_path, spoil):
    secret = spoil(b64(secrets.token_bytes(20)))
    with pytest.raises(FormatError, match=r"Key/Data/Secret/PlainValue is not valid base64"):
        read_seed_file(write(tmp_path, "bad.pskc", container(package(secret=secret))))


def test_base64_split_over_lines_is_still_read(tmp_path):
    """xs:base64Binary allows whitespace, and vendors wrap long values (RFC 6030 Figure 6 does)."""
    seed = secrets.token_bytes(32)
    text = b64(seed)
    wrapped = f"\n          {text[:20]}\n          {text[20:]}\n        "
    (record,) = read_seed_file(write(tmp_path, "wrapped.pskc", container(package(secret=wrapped))))
    assert hmac.compare_digest(record.secret, seed)


def test_a_bad_cipher_value_is_named_too(tmp_path):
    head = """
  <MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
    <MACKey>
      <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
      <xenc:CipherData><xenc:CipherValue>AAAA====</xenc:CipherValue></xenc:CipherData>
    </MACKey>
  </MACMethod>"""
    with pytest.raises(FormatError, match=r"bad-mac.pskc: MACMethod/MACKey/CipherData/CipherValue is not valid"):
        read_seed_file(write(tmp_path, "bad-mac.pskc", container(package(), head=head)), key=bytes(16))


# ----------------------------------------------------------------------------- malformed values named


@pytest.mark.parametrize(
    ("change", "element"),
    [
        ({"data": "<Counter><PlainValue>1_000</PlainValue></Counter>"}, "Key/Data/Counter/PlainValue"),
        (
            {"parameters": '<ResponseFormat Length="six" Encoding="DECIMAL"/>'},
            "Key/AlgorithmParameters/ResponseFormat@Length",
        ),
        (
            {"parameters": '<ResponseFormat Length="6" Encoding="DECIMAL" CheckDigits="maybe"/>'},
            "Key/AlgorithmParameters/ResponseFormat@CheckDigits",
        ),
        ({"policy": "<Policy><StartDate>next tuesday</StartDate></Policy>"}, "Key/Policy/StartDate"),
        ({"device": "<ExpiryDate>2026-02-30T00:00:00Z</ExpiryDate>"}, "DeviceInfo/ExpiryDate"),
        # ISO 8601 forms that are no xs:dateTime: week dates (python-pskc's dateutil then failed
        # with a bare "malformed value (ParserError)"), the basic format, a space for the T
        ({"policy": "<Policy><ExpiryDate>2026-W05-1</ExpiryDate></Policy>"}, "Key/Policy/ExpiryDate"),
        ({"device": "<StartDate>2026-W05-1T00:00:00</StartDate>"}, "DeviceInfo/StartDate"),
        ({"policy": "<Policy><StartDate>20260131T000000Z</StartDate></Policy>"}, "Key/Policy/StartDate"),
        ({"device": "<ExpiryDate>2026-01-31 00:00:00</ExpiryDate>"}, "DeviceInfo/ExpiryDate"),
        (
            {"algorithm": TOTP, "data": "<TimeInterval><PlainValue>30s</PlainValue></TimeInterval>"},
            "Key/Data/TimeInterval/PlainValue",
        ),
        (
            {"algorithm": TOTP, "data": "<TimeDrift><PlainValue>- 2</PlainValue></TimeDrift>"},
            "Key/Data/TimeDrift/PlainValue",
        ),
    ],
)
def test_a_malformed_value_names_its_element(tmp_path, change, element):
    with pytest.raises(FormatError) as err:
        read_seed_file(write(tmp_path, "bad.pskc", container(package(**change))))
    assert f"key package 1 (serial VX-1001): {element} is not" in str(err.value)
    assert "ValueError" not in str(err.value) and "malformed value" not in str(err.value)


def test_a_value_only_python_pskc_cannot_read_is_named_too(tmp_path, monkeypatch):
    """The net behind check_values: were a value to pass it that python-pskc still cannot read,
    the message names that element, not a bare exception type. (check_values is turned off here
    to reach it: with it on, every value python-pskc reads is checked first.)"""
    from keyfob.formats import pskc as kf_pskc

    monkeypatch.setattr(kf_pskc, "check_values", lambda root, where: None)
    for change, element in (
        ({"policy": "<Policy><ExpiryDate>2026-W05-1</ExpiryDate></Policy>"}, "Key/Policy/ExpiryDate"),
        ({"data": "<Counter><PlainValue>ten</PlainValue></Counter>"}, "Key/Data/Counter/PlainValue"),
        (
            {"parameters": '<ResponseFormat Length="6" Encoding="DECIMAL" CheckDigits="maybe"/>'},
            "Key/AlgorithmParameters/ResponseFormat@CheckDigits",
        ),
    ):
        with pytest.raises(FormatError) as err:
            read_seed_file(write(tmp_path, "bad.pskc", container(package(**change))))
        assert str(err.value).startswith(f"{tmp_path / 'bad.pskc'}: key package 1 (serial VX-1001): {element} "), err
        assert "Error" not in str(err.value) and "malformed value" not in str(err.value)


def test_the_second_package_is_the_one_named(tmp_path):
    bad = package("VX-1002", data="<Counter><PlainValue>ten</PlainValue></Counter>")
    with pytest.raises(FormatError, match=r"key package 2 \(serial VX-1002\): Key/Data/Counter/PlainValue"):
        read_seed_file(write(tmp_path, "two.pskc", container(package(), bad)))


def test_key_packages_are_numbered_as_they_stand_in_the_file(tmp_path):
    """A package without a Key (RFC 6030 allows one per device, e.g. a PIN-only package elsewhere)
    still counts: the bad key below is in package 2 for every kind of error."""
    empty = "\n  <KeyPackage><DeviceInfo><SerialNo>VX-0</SerialNo></DeviceInfo></KeyPackage>"
    bad = package("VX-1002", parameters='<ResponseFormat Length="7" Encoding="DECIMAL"/>')
    with pytest.raises(FormatError, match=r"key package 2 \(serial VX-1002\): digits must be 6 or 8"):
        read_seed_file(write(tmp_path, "gap.pskc", container(empty, bad)))


# ----------------------------------------------------------------------------- what is not supported


def figure_8_style(seed_cipher: bytes) -> str:
    """RFC 6030 section 6.3 (Figure 8): the seeds encrypted to the RSA key of an X.509 certificate."""
    head = f"""
  <EncryptionKey>
    <ds:X509Data><ds:X509Certificate>{b64(secrets.token_bytes(300))}</ds:X509Certificate></ds:X509Data>
  </EncryptionKey>"""
    encrypted = f"""<EncryptedValue>
          <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#rsa_1_5"/>
          <xenc:CipherData><xenc:CipherValue>{b64(seed_cipher)}</xenc:CipherValue></xenc:CipherData>
        </EncryptedValue>"""
    text = container(package(), head=head)
    start = text.index("<PlainValue>", text.index("<Secret>"))
    end = text.index("</PlainValue>", start) + len("</PlainValue>")
    return text[:start] + encrypted + text[end:]


@pytest.mark.parametrize("unlock", [{}, {"key": bytes(16)}, {"passphrase": "qwerty"}])
def test_asymmetric_key_transport_is_named(tmp_path, unlock):
    path = write(tmp_path, "rsa.pskc", figure_8_style(secrets.token_bytes(128)))
    with pytest.raises(FormatError, match="asymmetric key transport .* is not supported") as err:
        read_seed_file(path, **unlock)
    assert "pre-shared key or the passphrase" not in str(err.value).split("not supported")[0]


def test_rsa_oaep_without_a_certificate_is_asymmetric_too(tmp_path):
    text = figure_8_style(secrets.token_bytes(128)).replace("rsa_1_5", "rsa-oaep-mgf1p")
    text = text.replace(text[text.index("<EncryptionKey>") : text.index("</EncryptionKey>") + 16], "")
    with pytest.raises(FormatError, match="asymmetric key transport"):
        read_seed_file(write(tmp_path, "oaep.pskc", text))


@pytest.mark.parametrize(
    "change",
    [
        {
            "algorithm": f"{NS}#OCRA-1",
            "parameters": "<Suite>OCRA-1:HOTP-SHA1-6:QN08</Suite>"
            '<ChallengeFormat Encoding="DECIMAL" Min="8" Max="8"/><ResponseFormat Length="6" Encoding="DECIMAL"/>',
        },
        {"parameters": '<Suite>OCRA-1:HOTP-SHA256-8:C-QN08</Suite><ResponseFormat Length="8" Encoding="DECIMAL"/>'},
    ],
)
def test_ocra_keys_are_named(tmp_path, change):
    with pytest.raises(
        FormatError, match=r"serial VX-1001\): OCRA \(challenge-response, RFC 6287\) keys are not supported"
    ):
        read_seed_file(write(tmp_path, "ocra.pskc", container(package(**change))))


# ----------------------------------------------------------------------------- nothing quoted but the serial

FIGURE_7_HEAD = """
  <EncryptionKey>
    <DerivedKey xmlns="http://www.w3.org/2009/xmlenc11#">
      <KeyDerivationMethod Algorithm="{kdf}">
        <PBKDF2-params xmlns="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#">
          <Salt><Specified>Ej7/PEpyEpw=</Specified></Salt>
          <IterationCount>1000</IterationCount><KeyLength>16</KeyLength>
          <PRF Algorithm="{prf}"/>
        </PBKDF2-params>
      </KeyDerivationMethod>
      <MasterKeyName>My Password 1</MasterKeyName>
    </DerivedKey>
  </EncryptionKey>"""
PBKDF2 = "http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2"
HMAC_SHA1 = "http://www.w3.org/2000/09/xmldsig#hmac-sha1"


def encrypted_secret(text: str, algorithm: str) -> str:
    """``text`` with its plain secret replaced by an (undecryptable) EncryptedValue and a ValueMAC."""
    start = text.index("<PlainValue>", text.index("<Secret>"))
    end = text.index("</PlainValue>", start) + len("</PlainValue>")
    value = f"""<EncryptedValue>
          <xenc:EncryptionMethod Algorithm="{algorithm}"/>
          <xenc:CipherData><xenc:CipherValue>{b64(secrets.token_bytes(48))}</xenc:CipherValue></xenc:CipherData>
        </EncryptedValue><ValueMAC>{b64(secrets.token_bytes(20))}</ValueMAC>"""
    return text[:start] + value + text[end:]


def mac_head(algorithm: str) -> str:
    return f"""
  <MACMethod Algorithm="{algorithm}">
    <MACKey>
      <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
      <xenc:CipherData><xenc:CipherValue>{b64(secrets.token_bytes(48))}</xenc:CipherValue></xenc:CipherData>
    </MACKey>
  </MACMethod>"""


AES128 = "http://www.w3.org/2001/04/xmlenc#aes128-cbc"
PLANTED = {
    "Version": (lambda: container(package(), version=PLANT), {}),
    "Key@Algorithm": (lambda: container(package(algorithm=PLANT)), {}),
    "ResponseFormat@Encoding": (
        lambda: container(package(parameters=f'<ResponseFormat Length="6" Encoding="{PLANT}"/>')),
        {},
    ),
    "ResponseFormat@Length": (
        lambda: container(package(parameters=f'<ResponseFormat Length="{PLANT}" Encoding="DECIMAL"/>')),
        {},
    ),
    "Suite": (
        lambda: container(package(parameters=f'<Suite>{PLANT}</Suite><ResponseFormat Length="6" Encoding="DECIMAL"/>')),
        {},
    ),
    "Counter": (lambda: container(package(data=f"<Counter><PlainValue>{PLANT}</PlainValue></Counter>")), {}),
    "KeyUsage": (lambda: container(package(policy=f"<Policy><KeyUsage>{PLANT}</KeyUsage></Policy>")), {}),
    "StartDate": (lambda: container(package(policy=f"<Policy><StartDate>{PLANT}</StartDate></Policy>")), {}),
    "EncryptionMethod@Algorithm": (
        lambda: encrypted_secret(container(package(), head=mac_head(HMAC_SHA1)), PLANT),
        {"key": bytes(16)},
    ),
    "MACMethod@Algorithm": (
        lambda: encrypted_secret(container(package(), head=mac_head(PLANT)), AES128),
        {"key": bytes(16)},
    ),
    "KeyDerivationMethod@Algorithm": (
        lambda: encrypted_secret(container(package(), head=FIGURE_7_HEAD.format(kdf=PLANT, prf=HMAC_SHA1)), AES128),
        {"passphrase": "qwerty"},
    ),
    "PRF@Algorithm": (
        lambda: encrypted_secret(container(package(), head=FIGURE_7_HEAD.format(kdf=PBKDF2, prf=PLANT)), AES128),
        {"passphrase": "qwerty"},
    ),
}


@pytest.fixture
def verifier_env(tmp_path, monkeypatch):
    monkeypatch.delenv("KEYFOB_KEY", raising=False)
    monkeypatch.setenv("KEYFOB_DB", str(tmp_path / "v.db"))
    monkeypatch.setenv("KEYFOB_KEY_FILE", str(tmp_path / "keys" / "v.key"))
    monkeypatch.setenv("KEYFOB_TRANSPORT_KEY_FILE", str(tmp_path / "no-transport.key"))
    monkeypatch.setenv("KEYFOB_ARGON2_PROFILE", "fast")
    assert cli("server", "init").exit_code == 0
    return tmp_path


def cli(*args: object, input: str | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


@pytest.mark.parametrize("field", sorted(PLANTED))
def test_no_message_quotes_a_field_of_the_file(tmp_path, verifier_env, field):
    make, unlock = PLANTED[field]
    path = write(tmp_path, "planted.pskc", make())
    with pytest.raises(FormatError) as err:
        read_seed_file(path, **unlock)
    assert PLANT not in str(err.value)
    assert "serial VX-1001" in str(err.value) or field in (
        "Version",
        "EncryptionMethod@Algorithm",
        "MACMethod@Algorithm",
        "KeyDerivationMethod@Algorithm",
        "PRF@Algorithm",
    )
    args = ["token", "import", path]
    stdin = None
    if "key" in unlock:
        args += ["--key", unlock["key"].hex()]
    if "passphrase" in unlock:
        args += ["--passphrase-stdin"]
        stdin = unlock["passphrase"] + "\n"
    result = cli(*args, input=stdin)
    assert result.exit_code != 0
    assert PLANT not in result.stdout + result.stderr
    assert cli("token", "list", "--json").stdout.strip() == "[]"


# ----------------------------------------------------------------------------- SHA-512

# RFC 6238 appendix B: the SHA-512 seed is "1234567890" repeated to 64 bytes, 8 digits, 30 s.
RFC6238_SHA512_SEED = b"1234567890" * 6 + b"1234"
RFC6238_SHA512 = {59: "90693936", 1111111109: "25091201", 1234567890: "93441116", 20000000000: "47863826"}


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def sha512_file(tmp_path: Path, seeds: dict[str, bytes]) -> Path:
    """multiOTP-style: the hash in AlgorithmParameters/Suite, a TOTP and a HOTP key."""
    packages = [
        package(
            "MO-TOTP",
            secret=b64(seeds["totp"]),
            algorithm=TOTP,
            parameters='<Suite>HMAC-SHA512</Suite><ResponseFormat Length="8" Encoding="DECIMAL"/>',
            data="<TimeInterval><PlainValue>30</PlainValue></TimeInterval>",
        ),
        package(
            "MO-HOTP",
            secret=b64(seeds["hotp"]),
            parameters='<Suite>HMAC-SHA512</Suite><ResponseFormat Length="6" Encoding="DECIMAL"/>',
            data="<Counter><PlainValue>5</PlainValue></Counter>",
        ),
    ]
    return write(tmp_path, "multiotp.pskc", container(*packages))


def test_sha512_keys_import_and_their_codes_verify(tmp_path):
    import pyotp
    from keyfob.otp import hotp, totp
    from keyfob.verifier import Policy, Verifier

    seeds = {"totp": RFC6238_SHA512_SEED, "hotp": secrets.token_bytes(64)}
    totp_record, hotp_record = read_seed_file(sha512_file(tmp_path, seeds))
    assert (totp_record.algorithm, hotp_record.algorithm) == ("sha512", "sha512")
    ref_totp = pyotp.TOTP(base64.b32encode(seeds["totp"]).decode(), digits=8, digest=hashlib.sha512)
    ref_hotp = pyotp.HOTP(base64.b32encode(seeds["hotp"]).decode(), digits=6, digest=hashlib.sha512)
    for moment, code in RFC6238_SHA512.items():
        assert ref_totp.at(moment) == totp(totp_record.secret, moment, 30, 8, "sha512") == code
    # A 64-byte seed without a Suite means SHA-512 too (RFC 6238: the seed is as long as the hash).
    no_suite = sha512_file(tmp_path, seeds).read_text().replace("<Suite>HMAC-SHA512</Suite>", "")
    assert {r.algorithm for r in read_seed_file(write(tmp_path, "no-suite.pskc", no_suite))} == {"sha512"}

    clock = Clock(1_700_000_000.0)
    v = Verifier.init(tmp_path / "v.db", key=b"K" * 32, policy=Policy(password_profile="fast"), clock=clock)
    try:
        assert sorted(v.import_seed_file(tmp_path / "multiotp.pskc")) == ["MO-HOTP", "MO-TOTP"]
        v.add_user("ann", "pw ann 1234")
        v.add_user("bob", "pw bob 1234")
        assert v.link("ann", "MO-TOTP", ref_totp.at(int(clock.t))).accepted
        assert v.link("bob", "MO-HOTP", ref_hotp.at(5)).accepted
        clock.t += 30
        assert v.check_code("ann", ref_totp.at(int(clock.t))).accepted
        assert v.check_code("bob", ref_hotp.at(6)).accepted
        assert hotp(seeds["hotp"], 7, 6, "sha512") == ref_hotp.at(7)
        # a SHA-1 code from the same seed is not a SHA-512 code
        sha1_code = pyotp.HOTP(base64.b32encode(seeds["hotp"]).decode(), digits=6).at(7)
        assert sha1_code == ref_hotp.at(7) or not v.check_code("bob", sha1_code).accepted
    finally:
        v.close()


def test_sha512_in_csv_and_otpauth(tmp_path):
    seed = secrets.token_bytes(64)
    (by_column,) = read_seed_file(write(tmp_path, "a.csv", f"CSV-1,{seed.hex()},totp,6,30,sha512\n"))
    (by_length,) = read_seed_file(write(tmp_path, "b.csv", f"CSV-2,{seed.hex()},hotp,6,0\n"))
    secret = base64.b32encode(seed).decode().rstrip("=")
    (by_uri,) = read_seed_file(write(tmp_path, "c.txt", f"otpauth://totp/ACME:u1?secret={secret}&algorithm=SHA512\n"))
    assert by_column.algorithm == by_length.algorithm == by_uri.algorithm == "sha512"


def test_keyfob_tokens_still_get_sha1_or_sha256_only():
    from keyfob.provision import ProvisionError, new_record
    from keyfob.serials import make_serial

    assert new_record(make_serial(1), "totp", "sha256").algorithm == "sha256"
    with pytest.raises(ProvisionError, match="algorithm must be one of sha1, sha256"):
        new_record(make_serial(2), "totp", "sha512")


# ----------------------------------------------------------------------------- <Policy> (RFC 6030 section 5)

NOW = 1_780_000_000.0  # 2026-05-28T20:26:40Z: the verifier's clock in these tests
PAST, FUTURE = "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"


def policy(*children: str) -> str:
    return f"<Policy>{''.join(children)}</Policy>"


def verifier(tmp_path: Path, now: float = NOW):
    from keyfob.verifier import Policy, Verifier

    return Verifier.init(tmp_path / "v.db", key=b"K" * 32, policy=Policy(password_profile="fast"), clock=Clock(now))


@pytest.mark.parametrize(
    "rules",
    [
        policy("<KeyUsage>CR</KeyUsage>"),
        policy("<KeyUsage>Encrypt</KeyUsage><KeyUsage>Decrypt</KeyUsage>"),
        policy("<KeyUsage>Unlock</KeyUsage>"),
    ],
)
def test_a_key_whose_usage_is_not_otp_refuses_the_file(tmp_path, rules):
    text = container(package("VX-1001"), package("VX-1002", policy=rules))
    with pytest.raises(FormatError, match=r"key package 2 \(serial VX-1002\): its Policy does not allow OTP"):
        read_seed_file(write(tmp_path, "cr.pskc", text))


def test_otp_among_other_usages_is_fine(tmp_path):
    rules = policy("<KeyUsage>OTP</KeyUsage><KeyUsage>Unlock</KeyUsage>")
    (record,) = read_seed_file(write(tmp_path, "otp.pskc", container(package(policy=rules))))
    assert record.serial == "VX-1001"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (policy("<KeyUsage>OTP</KeyUsage><Geofence>EU</Geofence>"), "rules keyfob does not know"),
        (policy("<KeyUsage>Teleport</KeyUsage>"), "rules keyfob does not know"),
        (policy('<PINPolicy PINUsageMode="Append" MinLength="4" PINEncoding="DECIMAL"/>'), "a PIN"),
        (policy("<NumberOfTransactions>100</NumberOfTransactions>"), "NumberOfTransactions"),
    ],
)
def test_policy_rules_keyfob_cannot_enforce_refuse_the_file(tmp_path, rules, message):
    """RFC 6030 section 5: a policy the recipient does not understand means the key must not be used."""
    with pytest.raises(FormatError, match=message):
        read_seed_file(write(tmp_path, "policy.pskc", container(package(policy=rules))))


def test_a_pin_checked_on_the_device_is_fine(tmp_path):
    rules = policy('<PINPolicy PINUsageMode="Local" MaxFailedAttempts="3" MinLength="4" PINEncoding="DECIMAL"/>')
    assert read_seed_file(write(tmp_path, "local.pskc", container(package(policy=rules))))


def batch_with_dates(tmp_path: Path) -> Path:
    """A vendor batch: one key valid now, one expired, one not valid yet, one whose device expired."""
    packages = [
        package("VX-1001", policy=policy(f"<StartDate>{PAST}</StartDate><ExpiryDate>{FUTURE}</ExpiryDate>")),
        package("VX-1002", policy=policy(f"<ExpiryDate>{PAST}</ExpiryDate>")),
        package("VX-1003", policy=policy(f"<StartDate>{FUTURE}</StartDate>")),
        package("VX-1004", device=f"<Manufacturer>oath.VX</Manufacturer><ExpiryDate>{PAST}</ExpiryDate>"),
    ]
    return write(tmp_path, "batch.pskc", container(*packages))


def test_policy_dates_are_read(tmp_path):
    records = read_seed_file(batch_with_dates(tmp_path))
    assert [(r.valid_from, r.valid_until) for r in records] == [
        (1767225600.0, 1798761600.0),
        (None, 1767225600.0),
        (1798761600.0, None),
        (None, 1767225600.0),
    ]


def test_keys_outside_their_dates_import_disabled_and_say_so(tmp_path):
    v = verifier(tmp_path)
    try:
        imported = v.import_seed_file(batch_with_dates(tmp_path))
        assert imported == ["VX-1001", "VX-1002", "VX-1003", "VX-1004"]
        assert [i.disabled for i in imported] == [
            None,
            "its ExpiryDate has passed",
            "its StartDate is still to come",
            "its ExpiryDate has passed",
        ]
        assert [v.token(s).state for s in imported] == ["unassigned", "disabled", "disabled", "disabled"]
        audit = {a.serial: a.detail for a in v.audit(limit=None) if a.action == "token-import"}
        assert "imported disabled: its StartDate is still to come" in audit["VX-1003"]
    finally:
        v.close()


def test_the_expiry_date_itself_is_still_valid(tmp_path):
    """RFC 6030 section 5: the key may be used between the dates, inclusive."""
    text = container(package(policy=policy("<ExpiryDate>2026-05-28T20:26:40Z</ExpiryDate>")))
    v = verifier(tmp_path)
    try:
        (imported,) = v.import_seed_file(write(tmp_path, "edge.pskc", text))
        assert imported.disabled is None
    finally:
        v.close()


def test_cli_import_names_each_disabled_key(tmp_path, verifier_env):
    path = batch_with_dates(tmp_path)
    result = cli("token", "import", path)
    assert result.exit_code == 0, result.output
    assert "imported 4 token(s): VX-1001, VX-1002, VX-1003, VX-1004" in result.stdout
    assert "VX-1002 imported disabled: its ExpiryDate has passed" in result.stdout
    assert "VX-1003 imported disabled: its StartDate is still to come" in result.stdout
    import json

    listed = {t["serial"]: t["state"] for t in json.loads(cli("token", "list", "--json").stdout)}
    assert listed == {"VX-1001": "unassigned", "VX-1002": "disabled", "VX-1003": "disabled", "VX-1004": "disabled"}


def test_a_token_is_refused_once_its_expiry_date_has_passed(tmp_path):
    """A key imported while valid is not valid for ever: after its ExpiryDate (inclusive) every login
    with it is refused, the right code too, and the refusal reads as any other; the audit says why."""
    import pyotp

    seed = secrets.token_bytes(20)
    expiry = 1_798_761_600.0  # FUTURE, 2027-01-01T00:00:00Z
    data = "<TimeInterval><PlainValue>30</PlainValue></TimeInterval>"
    text = container(
        package(
            "VX-5001", secret=b64(seed), algorithm=TOTP, data=data, policy=policy(f"<ExpiryDate>{FUTURE}</ExpiryDate>")
        )
    )
    ref = pyotp.TOTP(base64.b32encode(seed).decode())
    clock = Clock(NOW)
    from keyfob.verifier import Policy, Verifier

    v = Verifier.init(tmp_path / "v.db", key=b"K" * 32, policy=Policy(password_profile="fast"), clock=clock)
    try:
        (imported,) = v.import_seed_file(write(tmp_path, "expiring.pskc", text))
        assert imported.disabled is None
        v.add_user("ann", "pw ann 1234")
        assert v.link("ann", "VX-5001", ref.at(int(clock.t))).accepted
        clock.t = expiry - 30  # the last steps before the date: still fine
        assert v.verify("ann", "pw ann 1234" + ref.at(int(clock.t))).accepted
        clock.t = expiry  # the date itself is still valid
        assert v.check_code("ann", ref.at(int(clock.t))).accepted
        for later in (expiry + 30, expiry + 86400 * 400):  # the next step, and a year on
            clock.t = later
            good = ref.at(int(later))
            for r in (v.verify("ann", "pw ann 1234" + good), v.check_code("ann", good)):
                assert (r.accepted, r.reason, r.serial) == (False, "expired", "VX-5001")
        assert v.explain("ann").detail == "expired"  # the audit says why; the answer did not
        assert v.token("VX-5001").state == "active"  # refused by its date, not by a state change
    finally:
        v.close()


def test_the_expiry_date_is_kept_across_export_and_import(tmp_path):
    from keyfob.formats import build_pskc, read_seed_file
    from keyfob.verifier import Policy, Verifier

    text = container(package("VX-5002", policy=policy(f"<ExpiryDate>{FUTURE}</ExpiryDate>")))
    v = verifier(tmp_path)
    try:
        v.import_seed_file(write(tmp_path, "in.pskc", text))
        data = v.export_records(["VX-5002"], render=lambda recs: build_pskc(recs, plain=True))
    finally:
        v.close()
    assert b"<pskc:ExpiryDate>2027-01-01T00:00:00Z</pskc:ExpiryDate>" in data
    (back,) = read_seed_file(write(tmp_path, "out.pskc", data))
    assert back.valid_until == 1_798_761_600.0
    # a later server refuses it after the date as this one does
    w = Verifier.init(
        tmp_path / "w.db", key=b"K" * 32, policy=Policy(password_profile="fast"), clock=Clock(1_798_761_600.0 + 1)
    )
    try:
        (imported,) = w.import_seed_file(tmp_path / "out.pskc")
        assert imported.disabled == "its ExpiryDate has passed"
    finally:
        w.close()


# ----------------------------------------------------------------------------- <TimeDrift>


def test_time_drift_is_the_tokens_starting_drift(tmp_path):
    """RFC 6030: TimeDrift is in time intervals, negative when the device is behind the server."""
    import pyotp

    seed = secrets.token_bytes(20)
    drifted = package(
        "VX-2001",
        secret=b64(seed),
        algorithm=TOTP,
        data="<TimeInterval><PlainValue>30</PlainValue></TimeInterval><TimeDrift><PlainValue>-3</PlainValue></TimeDrift>",
    )
    plain = drifted.replace("VX-2001", "VX-2002").replace("<TimeDrift><PlainValue>-3</PlainValue></TimeDrift>", "")
    path = write(tmp_path, "drift.pskc", container(drifted, plain))
    assert [r.drift for r in read_seed_file(path)] == [-3, 0]
    v = verifier(tmp_path)
    try:
        v.import_seed_file(path)
        assert (v.token("VX-2001").drift, v.token("VX-2002").drift) == (-3, 0)
        v.add_user("ann", "pw ann 1234")
        behind = pyotp.TOTP(base64.b32encode(seed).decode()).at(int(NOW) - 90)  # the device's clock, 3 steps late
        assert not v.link("ann", "VX-2002", behind).accepted
        assert v.link("ann", "VX-2001", behind).accepted
    finally:
        v.close()


def test_the_drift_is_exported_as_time_drift(tmp_path):
    """The drift a token came with, and what the verifier learned since, goes out as <TimeDrift>,
    so the next server starts where this one is (RFC 6030: in time steps, negative when behind)."""
    import pyotp
    from keyfob.formats import build_pskc, read_seed_file

    seed = secrets.token_bytes(20)
    data = "<TimeInterval><PlainValue>30</PlainValue></TimeInterval><TimeDrift><PlainValue>-3</PlainValue></TimeDrift>"
    path = write(tmp_path, "drift.pskc", container(package("VX-2001", secret=b64(seed), algorithm=TOTP, data=data)))
    v = verifier(tmp_path)
    try:
        v.import_seed_file(path)
        first = v.export_records(["VX-2001"], render=lambda recs: build_pskc(recs, key=b"P" * 16))
        v.add_user("ann", "pw ann 1234")
        late = pyotp.TOTP(base64.b32encode(seed).decode()).at(int(NOW) - 120)  # its clock now 4 steps behind
        assert v.link("ann", "VX-2001", late).accepted
        learned = v.token("VX-2001").drift
        later = v.export_records(["VX-2001"], render=lambda recs: build_pskc(recs, plain=True))
    finally:
        v.close()
    (start,) = read_seed_file(write(tmp_path, "first.pskc", first), key=b"P" * 16)
    assert (start.drift, learned) == (-3, -4)
    assert b"<pskc:TimeDrift>" in later
    (back,) = read_seed_file(write(tmp_path, "later.pskc", later))
    assert back.drift == learned and back.secret == seed


@pytest.mark.parametrize("drift", ["100000", "-28801"])
def test_a_time_drift_of_more_than_ten_days_is_refused(tmp_path, drift):
    data = "<TimeInterval><PlainValue>30</PlainValue></TimeInterval>"
    data += f"<TimeDrift><PlainValue>{drift}</PlainValue></TimeDrift>"
    with pytest.raises(FormatError, match=r"serial VX-1001\): the drift must be within 10 days"):
        read_seed_file(write(tmp_path, "far.pskc", container(package(algorithm=TOTP, data=data))))


# ----------------------------------------------------------------------------- manufacturer and model


def test_manufacturer_and_model_survive_import_and_export(tmp_path, verifier_env):
    from keyfob.formats import format_csv

    path = write(tmp_path, "vx.pskc", container(package("VX-3001"), package("VX-3002", device="")))
    assert cli("token", "import", path).exit_code == 0
    csv_path = write(tmp_path, "plain.csv", format_csv([read_seed_file(path)[0]]).replace("VX-3001", "CSV-1"))
    assert cli("token", "import", csv_path).exit_code == 0
    out = tmp_path / "out.pskc"
    result = cli("token", "export", "--out", out, "--plain")
    assert result.exit_code == 0, result.output
    got = {r.serial: (r.manufacturer, r.model) for r in read_seed_file(out)}
    assert got == {"VX-3001": ("oath.VX", "VX-One"), "VX-3002": ("unknown", "unknown"), "CSV-1": ("unknown", "unknown")}


def test_a_manufacturer_too_long_for_the_database_is_refused(tmp_path):
    device = f"<Manufacturer>{'x' * 65}</Manufacturer>"
    with pytest.raises(FormatError, match=r"serial VX-1001\): manufacturer must be at most 64 characters"):
        read_seed_file(write(tmp_path, "long.pskc", container(package(device=device))))
