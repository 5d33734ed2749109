"""Issue 6, acceptance 1, with real (virtual) tokens: provision 5 tokens over USB into an
encrypted PSKC seed file, import it into a fresh verifier, and each token's next code (read
off its OLED) validates; then the same tokens move to other verifiers through OATH CSV and
otpauth URI files, and their next codes validate there.
"""

from __future__ import annotations

import pytest
from keyfob.formats import read_seed_file, write_csv, write_uris
from keyfob.provision import Protection, provision_batch
from keyfob.verifier import Verifier
from keyfob.verifier.rules import Policy

pytestmark = pytest.mark.timeout(300)

PASSWORD = "pass-word-4711"


def _verifier(path):
    return Verifier.init(f"sqlite:///{path}", key=bytes(range(32)), policy=Policy(password_profile="fast"))


def _code(tok) -> str:
    tok.press()
    tok.wait_idle()
    code = tok.screen().digits()
    assert code is not None
    return code


def test_five_tokens_through_pskc_csv_and_otpauth(tmp_path, make_token):
    toks = [make_token(f"t{i}") for i in range(5)]
    for tok in toks:
        tok.power_on()
        tok.wait_idle()
    protection = Protection.from_key_file(tmp_path / "transport.key")
    result = provision_batch([t.port for t in toks], tmp_path / "seeds", protection, mode="hotp")
    assert result.ok, result.failed
    serials = [p.record.serial for p in result.done]
    assert len(set(serials)) == 5

    # PSKC (encrypted with the pre-shared key) -> verifier A; each user links and logs in.
    with _verifier(tmp_path / "a.db") as a:
        assert sorted(a.import_seed_file(result.seed_file, key=protection.key)) == sorted(serials)
        for i, (tok, serial) in enumerate(zip(toks, serials, strict=True)):
            a.add_user(f"user{i}", PASSWORD)
            assert a.link(f"user{i}", serial, _code(tok)).accepted
            assert a.verify(f"user{i}", PASSWORD + _code(tok)).accepted
        exported = a.export_records(serials)
    assert [r.serial for r in exported] == serials
    write_csv(tmp_path / "tokens.csv", exported)
    write_uris(tmp_path / "tokens.txt", exported)

    # OATH CSV -> verifier B, otpauth URIs -> verifier C: the counters came along, so the
    # tokens' next codes validate there and old ones do not.
    for name, path in (("b", tmp_path / "tokens.csv"), ("c", tmp_path / "tokens.txt")):
        records = read_seed_file(path)
        assert [r.serial for r in records] == serials
        with _verifier(tmp_path / f"{name}.db") as v:
            v.import_records(records)
            for i, (tok, serial) in enumerate(zip(toks, serials, strict=True)):
                v.add_user(f"user{i}", PASSWORD)
                assert v.link(f"user{i}", serial, _code(tok)).accepted, (name, serial)
                code = _code(tok)
                assert v.verify(f"user{i}", PASSWORD + code).accepted, (name, serial)
                assert not v.verify(f"user{i}", PASSWORD + code).accepted  # replay
