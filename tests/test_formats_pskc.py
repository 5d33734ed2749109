"""PSKC seed files (RFC 6030): RFC figures, vendor-style files, round trips, python-pskc's pskc2csv, bad files."""

from __future__ import annotations

import base64
import csv
import hmac
import io
import os
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from keyfob.formats import FormatError, read_seed_file, write_pskc
from keyfob.formats.pskc import PBKDF2_ITERATIONS, build_pskc
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from oracles import hotp, pyotp_code

# ----------------------------------------------------------------------------- helpers


def own_code(record: TokenRecord, moment: int) -> str:
    step = moment if record.mode == "hotp" else moment // record.period
    return hotp(record.secret, step, record.digits, record.algorithm)


def five_records() -> list[TokenRecord]:
    """Five tokens covering both modes, both hashes, 6/8 digits, both periods, a huge counter,
    and hashes that differ from what the seed length alone would suggest."""
    return [
        TokenRecord(make_serial(1), "hotp", "sha1", 6, secrets.token_bytes(20), counter=0),
        TokenRecord(make_serial(2), "hotp", "sha256", 8, secrets.token_bytes(32), counter=41),
        TokenRecord(make_serial(3), "totp", "sha1", 6, secrets.token_bytes(20), period=30),
        TokenRecord(make_serial(4), "totp", "sha1", 8, secrets.token_bytes(32), period=60, model="keyfob-2"),
        TokenRecord(make_serial(5), "hotp", "sha256", 8, secrets.token_bytes(20), counter=2**33),
    ]


def secret_spellings(secret: bytes) -> list[bytes]:
    return [
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.b32encode(secret).rstrip(b"="),
    ]


def pskc2csv() -> str:
    path = Path(sys.executable).with_name("pskc2csv")
    assert path.exists(), "python-pskc's pskc2csv must be installed next to the interpreter"
    return str(path)


# ----------------------------------------------------------------------------- RFC 6030 figures
# Typed from the figures of RFC 6030 (section 5, Figure 3; section 6.1, Figure 6;
# section 6.2, Figure 7). The pre-shared key of Figure 6 is
# 12345678901234567890123456789012 (hex), the passphrase of Figure 7 "qwerty".

FIGURE_3 = """<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" Id="exampleID1" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
  <KeyPackage>
    <DeviceInfo>
      <Manufacturer>Manufacturer</Manufacturer>
      <SerialNo>987654321</SerialNo>
      <UserId>DC=example-bank,DC=net</UserId>
    </DeviceInfo>
    <CryptoModuleInfo>
      <Id>CM_ID_001</Id>
    </CryptoModuleInfo>
    <Key Id="12345678" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
      <Issuer>Issuer</Issuer>
      <AlgorithmParameters>
        <ResponseFormat Length="8" Encoding="DECIMAL"/>
      </AlgorithmParameters>
      <Data>
        <Secret>
          <PlainValue>MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=
          </PlainValue>
        </Secret>
        <Counter>
          <PlainValue>0</PlainValue>
        </Counter>
      </Data>
      <UserId>UID=jsmith,DC=example-bank,DC=net</UserId>
    </Key>
  </KeyPackage>
</KeyContainer>
"""

# Figure 4: the key is derived from a master key on the server: no secret in the file.
FIGURE_4 = """<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" Id="exampleID1" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
  <KeyPackage>
    <DeviceInfo>
      <Manufacturer>Manufacturer</Manufacturer>
      <SerialNo>987654321</SerialNo>
    </DeviceInfo>
    <CryptoModuleInfo>
      <Id>CM_ID_001</Id>
    </CryptoModuleInfo>
    <Key Id="12345678" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
      <Issuer>Issuer</Issuer>
      <AlgorithmParameters>
        <ResponseFormat Length="8" Encoding="DECIMAL"/>
      </AlgorithmParameters>
      <KeyProfileId>keyProfile1</KeyProfileId>
      <KeyReference>MasterKeyLabel</KeyReference>
      <Data>
        <Counter>
          <PlainValue>0</PlainValue>
        </Counter>
      </Data>
      <Policy>
        <KeyUsage>OTP</KeyUsage>
      </Policy>
    </Key>
  </KeyPackage>
</KeyContainer>
"""

FIGURE_6 = """<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0"
    xmlns="urn:ietf:params:xml:ns:keyprov:pskc"
    xmlns:ds="http://www.w3.org/2000/09/xmldsig#"
    xmlns:xenc="http://www.w3.org/2001/04/xmlenc#">
  <EncryptionKey>
    <ds:KeyName>Pre-shared-key</ds:KeyName>
  </EncryptionKey>
  <MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
    <MACKey>
      <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
      <xenc:CipherData>
        <xenc:CipherValue>
  ESIzRFVmd4iZABEiM0RVZgKn6WjLaTC1sbeBMSvIhRejN9vJa2BOlSaMrR7I5wSX
        </xenc:CipherValue>
      </xenc:CipherData>
    </MACKey>
  </MACMethod>
  <KeyPackage>
    <DeviceInfo>
      <Manufacturer>Manufacturer</Manufacturer>
      <SerialNo>987654321</SerialNo>
    </DeviceInfo>
    <CryptoModuleInfo>
      <Id>CM_ID_001</Id>
    </CryptoModuleInfo>
    <Key Id="12345678" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
      <Issuer>Issuer</Issuer>
      <AlgorithmParameters>
        <ResponseFormat Length="8" Encoding="DECIMAL"/>
      </AlgorithmParameters>
      <Data>
        <Secret>
          <EncryptedValue>
            <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
            <xenc:CipherData>
              <xenc:CipherValue>
  AAECAwQFBgcICQoLDA0OD+cIHItlB3Wra1DUpxVvOx2lef1VmNPCMl8jwZqIUqGv
              </xenc:CipherValue>
            </xenc:CipherData>
          </EncryptedValue>
          <ValueMAC>Su+NvtQfmvfJzF6bmQiJqoLRExc=
          </ValueMAC>
        </Secret>
        <Counter>
          <PlainValue>0</PlainValue>
        </Counter>
      </Data>
    </Key>
  </KeyPackage>
</KeyContainer>
"""
FIGURE_6_KEY = "12345678901234567890123456789012"

FIGURE_7 = """<?xml version="1.0" encoding="UTF-8"?>
<pskc:KeyContainer
  xmlns:pskc="urn:ietf:params:xml:ns:keyprov:pskc"
  xmlns:xenc11="http://www.w3.org/2009/xmlenc11#"
  xmlns:pkcs5="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#"
  xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" Version="1.0">
  <pskc:EncryptionKey>
    <xenc11:DerivedKey>
      <xenc11:KeyDerivationMethod
        Algorithm="http://www.rsasecurity.com/rsalabs/pkcs/schemas/pkcs-5v2-0#pbkdf2">
        <pkcs5:PBKDF2-params>
          <Salt>
            <Specified>Ej7/PEpyEpw=</Specified>
          </Salt>
          <IterationCount>1000</IterationCount>
          <KeyLength>16</KeyLength>
          <PRF/>
        </pkcs5:PBKDF2-params>
      </xenc11:KeyDerivationMethod>
      <xenc:ReferenceList>
        <xenc:DataReference URI="#ED"/>
      </xenc:ReferenceList>
      <xenc11:MasterKeyName>My Password 1</xenc11:MasterKeyName>
    </xenc11:DerivedKey>
  </pskc:EncryptionKey>
  <pskc:MACMethod Algorithm="http://www.w3.org/2000/09/xmldsig#hmac-sha1">
    <pskc:MACKey>
      <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
      <xenc:CipherData>
        <xenc:CipherValue>
2GTTnLwM3I4e5IO5FkufoOEiOhNj91fhKRQBtBJYluUDsPOLTfUvoU2dStyOwYZx
        </xenc:CipherValue>
      </xenc:CipherData>
    </pskc:MACKey>
  </pskc:MACMethod>
  <pskc:KeyPackage>
    <pskc:DeviceInfo>
      <pskc:Manufacturer>TokenVendorAcme</pskc:Manufacturer>
      <pskc:SerialNo>987654321</pskc:SerialNo>
    </pskc:DeviceInfo>
    <pskc:CryptoModuleInfo>
      <pskc:Id>CM_ID_001</pskc:Id>
    </pskc:CryptoModuleInfo>
    <pskc:Key Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp" Id="123456">
      <pskc:Issuer>Example-Issuer</pskc:Issuer>
      <pskc:AlgorithmParameters>
        <pskc:ResponseFormat Length="8" Encoding="DECIMAL"/>
      </pskc:AlgorithmParameters>
      <pskc:Data>
        <pskc:Secret>
          <pskc:EncryptedValue Id="ED">
            <xenc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
            <xenc:CipherData>
              <xenc:CipherValue>
      oTvo+S22nsmS2Z/RtcoF8Hfh+jzMe0RkiafpoDpnoZTjPYZu6V+A4aEn032yCr4f
              </xenc:CipherValue>
            </xenc:CipherData>
          </pskc:EncryptedValue>
          <pskc:ValueMAC>LP6xMvjtypbfT9PdkJhBZ+D6O4w=
          </pskc:ValueMAC>
        </pskc:Secret>
      </pskc:Data>
    </pskc:Key>
  </pskc:KeyPackage>
</pskc:KeyContainer>
"""

# The secret of all three figures is the ASCII string of RFC 4226 appendix D, whose
# HOTP values (the 31-bit truncations, section 5.3) are listed there; 8 digits = value mod 10^8.
RFC4226_SECRET = b"12345678901234567890"
RFC4226_TRUNCATED = [1284755224, 1094287082, 137359152, 1726969429, 1640338314]


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize(
    ("figure", "unlock", "manufacturer"),
    [
        (FIGURE_3, {}, "Manufacturer"),
        (FIGURE_6, {"key": FIGURE_6_KEY}, "Manufacturer"),
        (FIGURE_6, {"key": bytes.fromhex(FIGURE_6_KEY)}, "Manufacturer"),
        (FIGURE_7, {"passphrase": "qwerty"}, "TokenVendorAcme"),
    ],
    ids=["figure3-plain", "figure6-psk-hex", "figure6-psk-bytes", "figure7-pbkdf2"],
)
def test_rfc6030_figures_import(tmp_path, figure, unlock, manufacturer):
    (record,) = read_seed_file(write(tmp_path, "figure.pskcxml", figure), **unlock)
    assert record.serial == "987654321"
    assert (record.mode, record.algorithm, record.digits, record.counter) == ("hotp", "sha1", 8, 0)
    assert record.manufacturer == manufacturer
    assert hmac.compare_digest(record.secret, RFC4226_SECRET)
    for counter, truncated in enumerate(RFC4226_TRUNCATED):
        expected = str(truncated % 10**8).zfill(8)
        assert own_code(record, counter) == expected
        assert pyotp_code(record, counter) == expected


def test_rfc6030_figure7_wrong_or_missing_passphrase(tmp_path):
    path = write(tmp_path, "figure7.pskcxml", FIGURE_7)
    with pytest.raises(FormatError, match="encrypted: give the pre-shared key or the passphrase"):
        read_seed_file(path)
    with pytest.raises(FormatError, match="cannot decrypt"):
        read_seed_file(path, passphrase="qwertz")


def test_rfc6030_figure6_needs_a_key_not_a_passphrase(tmp_path):
    path = write(tmp_path, "figure6.pskcxml", FIGURE_6)
    with pytest.raises(FormatError, match="not protected by a passphrase"):
        read_seed_file(path, passphrase="qwerty")
    with pytest.raises(FormatError, match="16, 24 or 32 bytes"):
        read_seed_file(path, key="1234")


def test_rfc6030_figure4_has_no_secret(tmp_path):
    with pytest.raises(FormatError, match=r"key package 1 \(serial 987654321\): has no secret"):
        read_seed_file(write(tmp_path, "figure4.pskcxml", FIGURE_4))


# ----------------------------------------------------------------------------- vendor-style files
# Written here in the shapes vendors ship (seeds are this test's own random bytes).


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_feitian_style_file(tmp_path):
    """Feitian c100 (HOTP) / c200 (TOTP, 60 s): default namespace, 13-digit serials, no Suite."""
    totp_seed, hotp_seed = secrets.token_bytes(20), secrets.token_bytes(20)
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" xmlns ="urn:ietf:params:xml:ns:keyprov:pskc">
  <KeyPackage>
    <DeviceInfo>
      <Manufacturer>FeiTian Technology Co.,Ltd</Manufacturer>
      <SerialNo> 2600123456789 </SerialNo>
    </DeviceInfo>
    <Key Id="2600123456789" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp">
      <AlgorithmParameters><ResponseFormat Length="6" Encoding="DECIMAL"/></AlgorithmParameters>
      <Data>
        <Secret><PlainValue>{b64(totp_seed)}</PlainValue></Secret>
        <Time><PlainValue>0</PlainValue></Time>
        <TimeInterval><PlainValue>60</PlainValue></TimeInterval>
      </Data>
      <Policy>
        <StartDate>2024-01-01T00:00:00Z</StartDate>
        <ExpiryDate>2034-01-01T00:00:00Z</ExpiryDate>
      </Policy>
    </Key>
  </KeyPackage>
  <KeyPackage>
    <DeviceInfo>
      <Manufacturer>FeiTian Technology Co.,Ltd</Manufacturer>
      <SerialNo>1000123456789</SerialNo>
    </DeviceInfo>
    <Key Id="1000123456789" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
      <AlgorithmParameters><ResponseFormat Length="6" Encoding="DECIMAL"/></AlgorithmParameters>
      <Data>
        <Secret><PlainValue>{b64(hotp_seed)}</PlainValue></Secret>
        <Counter><PlainValue>7</PlainValue></Counter>
      </Data>
    </Key>
  </KeyPackage>
</KeyContainer>
"""
    totp, hotp_record = read_seed_file(write(tmp_path, "feitian.xml", text))
    assert (totp.serial, totp.mode, totp.period, totp.digits, totp.algorithm) == (
        "2600123456789",
        "totp",
        60,
        6,
        "sha1",
    )
    assert totp.manufacturer == "FeiTian Technology Co.,Ltd"
    assert hmac.compare_digest(totp.secret, totp_seed)
    assert (hotp_record.serial, hotp_record.mode, hotp_record.counter) == ("1000123456789", "hotp", 7)
    assert hmac.compare_digest(hotp_record.secret, hotp_seed)
    for moment in (0, 59, 60, 1_700_000_000):
        assert pyotp_code(totp, moment) == hotp(totp_seed, moment // 60, 6, "sha1")
    assert pyotp_code(hotp_record, 7) == hotp(hotp_seed, 7, 6, "sha1")


def test_multiotp_style_file_suite_and_seed_length_choose_the_hash(tmp_path):
    """multiOTP writes the hash in AlgorithmParameters/Suite; without it, a 32-byte seed means SHA-256."""
    seeds = [secrets.token_bytes(32), secrets.token_bytes(20), secrets.token_bytes(32)]
    suites = ["<Suite>HMAC-SHA256</Suite>", "<Suite>HMAC-SHA256</Suite>", ""]
    packages = "".join(
        f"""
  <KeyPackage>
    <DeviceInfo><Manufacturer>multiOTP</Manufacturer><SerialNo>mo-{n}</SerialNo></DeviceInfo>
    <Key Id="mo-{n}" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:totp">
      <Issuer>multiOTP</Issuer>
      <AlgorithmParameters>{suite}<ResponseFormat Length="6" Encoding="DECIMAL"/></AlgorithmParameters>
      <Data>
        <Secret><PlainValue>{b64(seed)}</PlainValue></Secret>
        <TimeInterval><PlainValue>30</PlainValue></TimeInterval>
      </Data>
    </Key>
  </KeyPackage>"""
        for n, (seed, suite) in enumerate(zip(seeds, suites, strict=True))
    )
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">{packages}
</KeyContainer>
"""
    records = read_seed_file(write(tmp_path, "tokens_totp.pskc", text))
    assert [r.algorithm for r in records] == ["sha256", "sha256", "sha256"]
    for record, seed in zip(records, seeds, strict=True):
        assert hmac.compare_digest(record.secret, seed)
        assert pyotp_code(record, 1_234_567_890) == hotp(seed, 1_234_567_890 // 30, 6, "sha256")
    # The same file with a SHA-1 suite on the 32-byte seed: the suite wins.
    sha1_text = text.replace("<Suite>HMAC-SHA256</Suite>", "<Suite>HMAC-SHA1</Suite>", 1)
    first = read_seed_file(write(tmp_path, "sha1.pskc", sha1_text))[0]
    assert first.algorithm == "sha1"


def test_yubico_oath_hotp_file_and_yubikey_otp_is_refused(tmp_path):
    seed = secrets.token_bytes(20)
    text = f"""<?xml version="1.0" encoding="UTF-8"?>
<KeyContainer Version="1.0" Id="yk-pskc-283599" xmlns="urn:ietf:params:xml:ns:keyprov:pskc">
  <KeyPackage>
    <DeviceInfo>
      <Manufacturer>oath.UB</Manufacturer>
      <SerialNo>283599</SerialNo>
      <StartDate>2024-01-22T00:25:11Z</StartDate>
    </DeviceInfo>
    <CryptoModuleInfo><Id>1</Id></CryptoModuleInfo>
    <Key Id="283599:1" Algorithm="urn:ietf:params:xml:ns:keyprov:pskc:hotp">
      <Issuer>ACME Inc.</Issuer>
      <AlgorithmParameters><ResponseFormat Encoding="DECIMAL" Length="8"/></AlgorithmParameters>
      <Data>
        <Secret><PlainValue>
          {b64(seed)}
        </PlainValue></Secret>
        <Counter><PlainValue>0</PlainValue></Counter>
      </Data>
      <UserId>CN=ekhgjhbctrgn, UID=ca62baca62ba</UserId>
    </Key>
  </KeyPackage>
</KeyContainer>
"""
    (record,) = read_seed_file(write(tmp_path, "yubico.pskcxml", text))
    assert (record.serial, record.manufacturer, record.digits, record.mode) == (
        "283599",
        "oath.UB",
        8,
        "hotp",
    )
    assert hmac.compare_digest(record.secret, seed)
    # A YubiKey OTP (AES, 44 modhex characters) slot is not an OATH token.
    aes = text.replace("urn:ietf:params:xml:ns:keyprov:pskc:hotp", "http://www.yubico.com/#yubikey-aes")
    aes = aes.replace('Encoding="DECIMAL" Length="8"', 'Encoding="ALPHANUMERIC" Length="44"')
    with pytest.raises(FormatError, match="neither HOTP nor TOTP"):
        read_seed_file(write(tmp_path, "yubikey-aes.pskcxml", aes))


# ----------------------------------------------------------------------------- round trips


def assert_same(got: list[TokenRecord], want: list[TokenRecord]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a == b  # dataclass equality includes the secret
        for moment in (0, 1, 2, 1_700_000_000):
            code = own_code(b, moment)
            assert pyotp_code(a, moment) == code


@pytest.mark.parametrize("unlock", ["key-bytes", "key-hex", "aes256-key", "passphrase"])
def test_round_trip_encrypted(tmp_path, unlock):
    records = five_records()
    if unlock == "passphrase":
        kwargs: dict[str, object] = {"passphrase": "correct horse battery staple"}
    elif unlock == "aes256-key":
        kwargs = {"key": secrets.token_bytes(32)}
    else:
        raw = secrets.token_bytes(16)
        kwargs = {"key": raw if unlock == "key-bytes" else raw.hex()}
    path = tmp_path / "tokens.pskcxml"
    write_pskc(path, records, **kwargs)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = path.read_bytes()
    for record in records:
        for spelling in secret_spellings(record.secret):
            assert spelling not in data
    assert b"PlainValue" in data  # counters and intervals stay readable
    assert_same(read_seed_file(path, **kwargs), records)
    if unlock == "passphrase":
        assert f"<IterationCount>{PBKDF2_ITERATIONS}</IterationCount>".encode() in data
        with pytest.raises(FormatError, match="cannot decrypt"):
            read_seed_file(path, passphrase="correct horse battery stapler")
    else:
        key = kwargs["key"]
        key_bytes = bytes.fromhex(key) if isinstance(key, str) else key
        wrong = bytes([key_bytes[0] ^ 1]) + key_bytes[1:]
        with pytest.raises(FormatError, match="cannot decrypt"):
            read_seed_file(path, key=wrong)


def test_round_trip_plain_only_when_asked(tmp_path):
    records = five_records()
    path = tmp_path / "plain.pskcxml"
    with pytest.raises(FormatError, match="plain=True"):
        write_pskc(path, records)
    assert not path.exists()
    write_pskc(path, records, plain=True)
    assert base64.b64encode(records[0].secret) in path.read_bytes()
    assert_same(read_seed_file(path), records)
    # A key or passphrase given for a plain file has nothing to unlock: the file still reads.
    assert_same(read_seed_file(path, passphrase="unused"), records)
    assert_same(read_seed_file(path, key=bytes(16)), records)


def test_writer_refuses_bad_requests(tmp_path):
    records = five_records()
    path = tmp_path / "x.pskcxml"
    with pytest.raises(FormatError, match="exactly one"):
        write_pskc(path, records, key=secrets.token_bytes(16), passphrase="pw")
    with pytest.raises(FormatError, match="exactly one"):
        write_pskc(path, records, key=secrets.token_bytes(16), plain=True)
    with pytest.raises(FormatError, match="16, 24 or 32 bytes"):
        write_pskc(path, records, key=secrets.token_bytes(10))
    with pytest.raises(FormatError, match="no tokens"):
        write_pskc(path, [], plain=True)
    with pytest.raises(FormatError, match="more than once"):
        write_pskc(path, [records[0], records[0]], plain=True)
    assert not path.exists()
    assert [p for p in tmp_path.iterdir()] == []  # no temporary files left behind


def test_pskc2csv_reads_what_we_write(tmp_path):
    """python-pskc's own command-line tool decrypts our files and sees the right fields."""
    records = five_records()
    key = secrets.token_bytes(16)
    columns = "serial,secret,algorithm,algorithm_suite,response_length,counter,time_interval,manufacturer,model"
    runs = []
    psk_path = tmp_path / "psk.pskcxml"
    write_pskc(psk_path, records, key=key)
    runs.append([pskc2csv(), "-c", columns, "-s", key.hex(), str(psk_path)])
    pbe_path = tmp_path / "pbe.pskcxml"
    write_pskc(pbe_path, records, passphrase="Tr0ub4dor&3")
    runs.append([pskc2csv(), "-c", columns, "-p", "Tr0ub4dor&3", str(pbe_path)])
    for argv in runs:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        rows = list(csv.DictReader(io.StringIO(done.stdout)))
        assert len(rows) == len(records)
        for row, record in zip(rows, records, strict=True):
            assert row["serial"] == record.serial
            assert hmac.compare_digest(row["secret"], record.secret.hex())
            assert row["algorithm"] == f"urn:ietf:params:xml:ns:keyprov:pskc:{record.mode}"
            assert row["algorithm_suite"] == {"sha1": "HMAC-SHA1", "sha256": "HMAC-SHA256"}[record.algorithm]
            assert int(row["response_length"]) == record.digits
            assert (row["manufacturer"], row["model"]) == (record.manufacturer, record.model)
            if record.mode == "hotp":
                assert (int(row["counter"]), row["time_interval"]) == (record.counter, "")
            else:
                assert (row["counter"], int(row["time_interval"])) == ("", record.period)


# ----------------------------------------------------------------------------- bad files


def written(tmp_path: Path, **kwargs: object) -> tuple[Path, list[TokenRecord]]:
    records = five_records()
    path = tmp_path / "good.pskcxml"
    write_pskc(path, records, **kwargs)
    return path, records


def assert_no_secret_in(message: str, records: list[TokenRecord]) -> None:
    for record in records:
        for spelling in secret_spellings(record.secret):
            assert spelling.decode() not in message


def test_wrong_key_is_one_clear_error(tmp_path):
    path, records = written(tmp_path, key=bytes(16))
    with pytest.raises(FormatError) as caught:
        read_seed_file(path, key=bytes(15) + b"\x01")
    message = str(caught.value)
    assert message.startswith(str(path)) and "cannot decrypt" in message
    assert_no_secret_in(message, records)


def flip_base64(text: str) -> str:
    return ("B" if text[0] == "A" else "A") + text[1:]


def test_bad_mac_is_refused(tmp_path):
    path, _records = written(tmp_path, key=bytes(range(16)))
    data = path.read_text()
    # Change the third token's MAC: the right key no longer opens the file.
    macs = re.findall(r"<pskc:ValueMAC>([^<]+)</pskc:ValueMAC>", data)
    assert len(macs) == 5
    bad = path.with_name("bad-mac.pskcxml")
    bad.write_text(data.replace(macs[2], flip_base64(macs[2])))
    with pytest.raises(FormatError, match=r"key package 3 .*MAC value does not match"):
        read_seed_file(bad, key=bytes(range(16)))
    # Change a ciphertext instead (MAC now covers different bytes).
    ciphers = re.findall(r"<xenc:CipherValue>([^<]+)</xenc:CipherValue>", data)
    altered = path.with_name("bad-cipher.pskcxml")
    altered.write_text(data.replace(ciphers[-1], ciphers[-1][:30] + flip_base64(ciphers[-1][30:])))
    with pytest.raises(FormatError, match="cannot decrypt"):
        read_seed_file(altered, key=bytes(range(16)))


def test_stripped_mac_is_refused(tmp_path):
    path, _ = written(tmp_path, key=bytes(range(16)))
    stripped = re.sub(r"<pskc:ValueMAC>[^<]+</pskc:ValueMAC>", "", path.read_text())
    bad = write(tmp_path, "stripped.pskcxml", stripped)
    with pytest.raises(FormatError, match=r"key package 1 .*has no MAC"):
        read_seed_file(bad, key=bytes(range(16)))


def test_truncated_file(tmp_path):
    path, records = written(tmp_path, plain=True)
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) - 20):
        bad = write(tmp_path, f"cut{cut}.pskcxml", data[:cut])
        with pytest.raises(FormatError, match="not well-formed XML") as caught:
            read_seed_file(bad)
        assert_no_secret_in(str(caught.value), records)


def test_xml_with_external_entity_is_refused(tmp_path):
    """XXE: the entity would paste another file (here a fake key) into the seed."""
    target = write(tmp_path, "outside.txt", "MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=")
    xxe = FIGURE_3.replace(
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE KeyContainer [\n'
        f'  <!ENTITY seed SYSTEM "file://{target}">\n]>\n',
    ).replace("MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=", "&seed;")
    with pytest.raises(FormatError, match="document type declaration"):
        read_seed_file(write(tmp_path, "xxe.pskcxml", xxe))
    laughs = FIGURE_3.replace(
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        '<?xml version="1.0"?>\n<!DOCTYPE KeyContainer [\n<!ENTITY a "aaaaaaaaaa">\n'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">\n<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">\n]>\n',
    ).replace("<Issuer>Issuer</Issuer>", "<Issuer>&c;</Issuer>")
    with pytest.raises(FormatError, match="document type declaration"):
        read_seed_file(write(tmp_path, "laughs.pskcxml", laughs))


def test_three_byte_seed_is_refused_without_showing_it(tmp_path):
    short = FIGURE_3.replace("MTIzNDU2Nzg5MDEyMzQ1Njc4OTA=", base64.b64encode(b"\x0b\xad\x5e").decode())
    with pytest.raises(FormatError) as caught:
        read_seed_file(write(tmp_path, "short.pskcxml", short))
    message = str(caught.value)
    assert "key package 1 (serial 987654321)" in message and "at least 16 bytes" in message
    for spelling in ("0bad5e", "C61e", "BOWV4"):
        assert spelling.lower() not in message.lower()


def test_one_bad_token_fails_the_whole_file(tmp_path):
    """All or nothing: four good tokens and one with 7 digits give an error, not four records."""
    path, _ = written(tmp_path, plain=True)
    data = path.read_text()
    bad = data.replace('Length="8"', 'Length="7"', 1)
    assert bad != data
    with pytest.raises(FormatError, match="digits must be 6 or 8"):
        read_seed_file(write(tmp_path, "one-bad.pskcxml", bad))


def test_other_bad_files(tmp_path):
    cases = {
        "not xml at all": (b"\x89PNG\r\n\x1a\n" + bytes(40), "neither PSKC XML nor UTF-8"),
        "not pskc": (b"<html><body>hello</body></html>", "not a PSKC file"),
        "empty container": (
            b'<KeyContainer Version="1.0" xmlns="urn:ietf:params:xml:ns:keyprov:pskc"/>',
            "contains no keys",
        ),
        "no serial": (re.sub(r"<SerialNo>.*</SerialNo>", "", FIGURE_3).encode(), "no serial number"),
        "hex response": (
            FIGURE_3.replace('Encoding="DECIMAL"', 'Encoding="HEXADECIMAL"').encode(),
            "DECIMAL",
        ),
        "sha384 suite": (
            FIGURE_3.replace("<ResponseFormat", "<Suite>HMAC-SHA384</Suite><ResponseFormat").encode(),
            "not supported",
        ),
        "huge pbkdf2": (FIGURE_7.replace(">1000<", ">4000000000<").encode(), "PBKDF2 iterations"),
    }
    for name, (data, message) in cases.items():
        path = write(tmp_path, name.replace(" ", "-") + ".pskcxml", data)
        unlock = {"passphrase": "qwerty"} if name == "huge pbkdf2" else {}
        with pytest.raises(FormatError, match=message):
            read_seed_file(path, **unlock)


def test_duplicate_serial_in_one_file(tmp_path):
    records = five_records()
    twin = TokenRecord(records[0].serial, "totp", "sha1", 6, secrets.token_bytes(20))
    data = build_pskc([records[0]], plain=True)
    other = build_pskc([twin], plain=True)
    # Splice the second file's KeyPackage into the first.
    package = re.search(rb"<pskc:KeyPackage>.*</pskc:KeyPackage>", other, re.DOTALL).group(0)
    merged = data.replace(b"</pskc:KeyContainer>", package + b"</pskc:KeyContainer>")
    with pytest.raises(FormatError, match="appears more than once"):
        read_seed_file(write(tmp_path, "dup.pskcxml", merged))


def test_missing_file(tmp_path):
    with pytest.raises(FormatError, match="cannot read"):
        read_seed_file(tmp_path / "nope.pskcxml")


def test_file_mode_is_private_even_with_a_lax_umask(tmp_path):
    old = os.umask(0)
    try:
        path, _ = written(tmp_path, plain=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_byte_order_mark_and_leading_comment_are_still_pskc(tmp_path):
    text = FIGURE_3.replace("<KeyContainer", "<!-- seeds for lot 7 -->\n<KeyContainer", 1)
    (record,) = read_seed_file(write(tmp_path, "bom.xml", b"\xef\xbb\xbf" + text.encode()))
    assert record.serial == "987654321"
