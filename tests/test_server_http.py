"""``keyfob serve`` end to end (issue 12, acceptance point 1): the real server (``keyfob serve``, so
uvicorn, in a subprocess on 127.0.0.1 and a free port, one per module) and a real client (httpx),
with pyotp making the codes from a seed imported into the verifier.

Link, validate, replay refused, lockout after ``max_fail`` wrong codes, unlock, resync, rejects the
same bytes whatever failed, the JSON shapes the README shows, API keys (scopes, revoked keys, the
audit naming the key), and a table of bad requests for every endpoint: each answered 4xx with one
line and the database unchanged (a dump of every table before and after)."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
from pathlib import Path

import httpx
import pyotp
import pytest
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.verifier import Policy, Verifier
from keyfob.verifier.apikeys import ApiKeys

from bench.servers import keyfob_serve

SEED = bytes(range(1, 21))
SEED_B = bytes(range(41, 61))
PW = "correct horse "
MAX_FAIL = 3
README = Path(__file__).resolve().parent.parent / "README.md"
HOTP = pyotp.HOTP(base64.b32encode(SEED).decode())
HOTP_B = pyotp.HOTP(base64.b32encode(SEED_B).decode())


def dump(path) -> dict:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {
            t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
            for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        }
    finally:
        con.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The database (a user, two HOTP tokens in the inventory, three API keys), then `keyfob serve`."""
    wd = tmp_path_factory.mktemp("serve")
    db, key_file = wd / "v.db", wd / "v.key"
    policy = Policy(password_profile="fast", max_fail=MAX_FAIL, user_rate_limit=1000)
    with Verifier.init(db, key_file=key_file, policy=policy) as v:
        serials = [make_serial(301), make_serial(302)]
        v.import_records(
            [TokenRecord(serials[0], "hotp", "sha1", 6, SEED), TokenRecord(serials[1], "hotp", "sha1", 6, SEED_B)]
        )
        v.add_user("alice", PW)
        v.add_user("bob", PW)
        keys = ApiKeys(v)
        api = {
            name: keys.add(name, scope)[1]
            for name, scope in (("web", "validate"), ("ops", "admin"), ("old", "validate"))
        }
        api["pam"] = keys.add("pam", "validate", code_only=True)[1]
        keys.revoke("old")
    with keyfob_serve(db, key_file, wd / "serve.log") as base, httpx.Client(base_url=base, timeout=30) as client:
        yield {"client": client, "db": db, "key_file": key_file, "serials": serials, "keys": api}


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def login(server, user, secret, *, key="web", form=False):
    c, k = server["client"], server["keys"][key]
    if form:
        return c.post("/validate/check", data={"user": user, "pass": secret}, headers=auth(k))
    return c.post("/validate/check", json={"user": user, "pass": secret}, headers=auth(k))


def admin(server, path, body=None, method="POST", key="ops"):
    return server["client"].request(method, "/admin" + path, json=body, headers=auth(server["keys"][key]))


def readme_shapes() -> list[dict]:
    """The JSON blocks of the README's HTTP API section, in order: accepted, refused, an error."""
    text = README.read_text()
    section = text.split("### HTTP API", 1)[1].split("\n## ", 1)[0]
    return [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", section, re.S)]


def _value(r) -> bool:
    assert r.status_code == 200, r.text
    return r.json()["result"]["value"]


def test_link_validate_replay_lockout_unlock_resync(server):
    s = server["serials"][0]
    r = admin(server, f"/tokens/{s}/link", {"user": "alice", "code": HOTP.at(0)})
    assert _value(r) is True and r.json()["detail"]["serial"] == s

    accepted, refused = readme_shapes()[:2]
    ok = login(server, "alice", PW + HOTP.at(1))
    assert ok.json() == accepted  # the README's accepted answer, byte for byte in meaning
    assert login(server, "alice", PW + HOTP.at(1)).json() == refused  # replay
    assert _value(login(server, "alice", PW + HOTP.at(2), form=True)) is True  # a form works the same

    for _ in range(MAX_FAIL):  # wrong codes lock the token
        assert _value(login(server, "alice", PW + "000000")) is False
    assert admin(server, f"/tokens/{s}", method="GET").json()["result"]["value"]["locked"] is True
    assert _value(login(server, "alice", PW + HOTP.at(3))) is False  # right code, locked token
    assert _value(admin(server, f"/tokens/{s}/unlock")) is True
    assert _value(login(server, "alice", PW + HOTP.at(3))) is True

    # the token ran ahead past the look-ahead window: refused until an admin resyncs it
    assert _value(login(server, "alice", PW + HOTP.at(40))) is False
    r = admin(server, f"/tokens/{s}/resync", {"code1": HOTP.at(40), "code2": HOTP.at(41)})
    assert _value(r) is True
    assert _value(login(server, "alice", PW + HOTP.at(41))) is False  # used by the resync
    assert _value(login(server, "alice", PW + HOTP.at(42))) is True

    # the reasons stay with the admin: explain and the audit log, which name the key used
    why = admin(server, "/explain/alice", method="GET").json()["result"]["value"]
    assert why["result"] == "ok" and why["via"] == "api:web"
    rows = admin(server, "/audit?user=alice&limit=50", method="GET").json()["result"]["value"]
    reasons = {r["detail"] for r in rows if r["action"] == "validate"}
    assert {"replay", "wrong-code", "locked"} <= reasons
    assert {r["via"] for r in rows if r["action"] == "validate"} == {"api:web"}
    assert {r["source"] for r in rows if r["action"] == "validate"} == {"127.0.0.1"}  # the client address
    assert {r["actor"] for r in rows if r["action"] in ("token-link", "token-unlock", "token-resync")} == {"api:ops"}


def test_a_reject_is_the_same_bytes_whatever_failed(server):
    s = server["serials"][1]
    assert _value(admin(server, f"/tokens/{s}/link", {"user": "bob", "code": HOTP_B.at(0)})) is True
    assert _value(login(server, "bob", PW + HOTP_B.at(1))) is True
    bodies = {
        "wrong password": login(server, "bob", "wrong " + HOTP_B.at(2)),
        "wrong code": login(server, "bob", PW + "123456"),
        "replay": login(server, "bob", PW + HOTP_B.at(1)),
        "unknown user": login(server, "nobody", PW + HOTP_B.at(2)),
        "no code": login(server, "bob", PW),
        "unknown serial": server["client"].post(
            "/validate/check",
            json={"serial": make_serial(399), "pass": PW + "123456"},
            headers=auth(server["keys"]["web"]),
        ),
    }
    raw = {why: (r.status_code, r.headers.get("content-type"), r.content) for why, r in bodies.items()}
    assert len(set(raw.values())) == 1, raw
    assert bodies["wrong code"].json() == readme_shapes()[1]
    r = server["client"].post(
        "/validate/check", json={"serial": s, "pass": PW + HOTP_B.at(2)}, headers=auth(server["keys"]["web"])
    )
    assert _value(r) is True  # by serial: the token's owner logs in


def test_a_code_only_key_checks_the_code_alone(server):
    """Each test makes what it needs (pytest-xdist may run this module's tests in two processes, each
    with its own server)."""
    seed = bytes(range(121, 141))
    ref, serial = pyotp.HOTP(base64.b32encode(seed).decode()), make_serial(304)
    uri = ref.provisioning_uri(name=serial, issuer_name="keyfob", initial_count=0)
    assert _value(admin(server, "/tokens", {"uri": uri})) == [serial]
    assert _value(admin(server, "/users", {"user": "erin", "password": PW}))["name"] == "erin"
    assert _value(admin(server, f"/tokens/{serial}/link", {"user": "erin", "code": ref.at(0)})) is True
    counter = 1
    assert _value(login(server, "erin", ref.at(counter), key="pam")) is True
    assert _value(login(server, "erin", ref.at(counter), key="pam")) is False  # replay
    assert _value(login(server, "erin", PW + ref.at(counter + 1), key="pam")) is False  # not a code
    assert _value(login(server, "erin", ref.at(counter + 1), key="web")) is False  # a normal key wants the password
    why = admin(server, "/explain/erin", method="GET").json()["result"]["value"]
    assert why["via"] == "api:web" and why["detail"] == "malformed"
    # a relying party names the end user's address: that is the source the verifier throttles
    r = server["client"].post(
        "/validate/check",
        json={"user": "erin", "pass": PW + "000000", "client": "2001:db8::7"},
        headers=auth(server["keys"]["web"]),
    )
    assert _value(r) is False
    assert admin(server, "/explain/erin", method="GET").json()["result"]["value"]["source"] == "2001:db8::7"


def test_import_a_token_from_an_otpauth_uri_then_log_in(server):
    seed = bytes(range(81, 101))
    serial = make_serial(303)
    uri = pyotp.HOTP(base64.b32encode(seed).decode()).provisioning_uri(
        name=serial, issuer_name="keyfob", initial_count=0
    )
    r = admin(server, "/tokens", {"uri": uri})
    assert _value(r) == [serial]
    assert admin(server, "/tokens", {"uri": uri}).status_code == 409  # already there
    ref = pyotp.HOTP(base64.b32encode(seed).decode())
    assert _value(admin(server, "/users", {"user": "dave", "password": PW})) == {
        "name": "dave",
        "twofa": True,
        "tokens": 0,
        "backup_codes": 0,
    }
    assert _value(admin(server, f"/tokens/{serial}/link", {"user": "dave", "code": ref.at(0)})) is True
    assert _value(login(server, "dave", PW + ref.at(1))) is True
    assert admin(server, "/tokens", {"uri": uri}, key="web").status_code == 403


def test_x_forwarded_for_is_ignored_without_forwarded_allow_ips(server):
    r = server["client"].post(
        "/validate/check",
        json={"user": "bob", "pass": PW + "000000"},
        headers={**auth(server["keys"]["web"]), "X-Forwarded-For": "198.51.100.9"},
    )
    assert _value(r) is False
    assert admin(server, "/explain/bob", method="GET").json()["result"]["value"]["source"] == "127.0.0.1"


def test_api_keys_scopes_and_revocation(server):
    c = server["client"]
    body = {"user": "alice", "pass": PW + "000000"}
    assert c.post("/validate/check", json=body).status_code == 401
    assert c.post("/validate/check", json=body, headers=auth(server["keys"]["old"])).status_code == 401  # revoked
    assert c.post("/validate/check", json=body, headers=auth("kf_" + "A" * 43)).status_code == 401
    assert admin(server, "/tokens", method="GET", key="web").status_code == 403  # validate key, admin call
    assert login(server, "alice", PW + "000000", key="ops").status_code == 200  # admin keys may validate
    listing = admin(server, "/tokens", method="GET").json()["result"]["value"]
    assert set(server["serials"]) <= {t["serial"] for t in listing}
    # OpenAPI at /docs: the description itself, no Swagger UI page (its CDN script would run on the
    # security center's origin)
    docs = c.get("/docs", follow_redirects=False)
    assert docs.status_code == 307 and docs.headers["location"] == "/openapi.json"
    assert "<script" not in docs.text and "/validate/check" in c.get("/openapi.json").json()["paths"]


MB = b"x" * (1 << 20)
_V = "/validate/check"
_J = {"content-type": "application/json"}
_F = {"content-type": "application/x-www-form-urlencoded"}
S0 = "{s0}"
#: (method, path, headers, body, status) — {s0} is the first serial
BAD = [
    ("POST", _V, _J, b'{"user": "alice", "pass": ', 400),
    ("POST", _V, _J, b'["alice", "pw"]', 400),
    ("POST", _V, _J, b"", 400),
    ("POST", _V, {"content-type": "text/plain"}, b"user=alice&pass=x", 415),
    ("POST", _V, {}, b"user=alice&pass=x", 415),
    ("POST", _V, {"content-type": "multipart/form-data; boundary=x"}, b"--x--", 415),
    ("POST", _V, _J, b'{"user": "alice"}', 400),
    ("POST", _V, _J, b'{"pass": "pw 123456"}', 400),
    ("POST", _V, _J, b'{"user": "alice", "serial": "KF1", "pass": "x"}', 400),
    ("POST", _V, _J, b'{"user": "alice", "pass": "x", "realm": "r"}', 400),
    ("POST", _V, _J, b'{"user": "alice", "pass": 123456}', 400),
    ("POST", _V, _J, b'{"user": ["alice"], "pass": "x"}', 400),
    ("POST", _V, _J, b'{"user": "alice", "pass": "\xff\xfe"}', 400),
    ("POST", _V, _J, b'{"user": "alice", "pass": "pw \\ud800 123456"}', 400),
    ("POST", _V, _J, '{"user": "al\u202eice", "pass": "x"}'.encode(), 400),
    ("POST", _V, _J, '{"user": "\u0430lice", "pass": "x"}'.encode(), 400),
    ("POST", _V, _J, b'{"user": "alice", "pass": "pw\\u0000123456"}', 400),
    ("POST", _V, _J, json.dumps({"user": "a" * 65, "pass": "x"}).encode(), 400),
    ("POST", _V, _J, json.dumps({"user": "alice", "pass": "p" * 257}).encode(), 400),
    ("POST", _V, _F, b"user=alice&pass=%ff%fe", 400),
    ("POST", _V, _J, b'{"user": "alice", "pass": "x", "client": "10.0.0.1 evil"}', 400),
    ("POST", _V, _J, b'{"user": "alice", "pass": "x", "client": ""}', 400),
    ("POST", _V, _F, b"user=alice&user=bob&pass=x", 400),
    ("POST", _V, _F, b"user=alice&&pass", 400),
    ("POST", _V, _J, MB, 413),
    ("POST", _V, _F, MB, 413),
    ("GET", _V, {}, b"", 405),
    ("POST", "/admin/tokens/" + S0 + "/link", _J, b'{"user": "alice"}', 400),
    ("POST", "/admin/tokens/" + S0 + "/link", _J, b'{"user": "alice", "code": "1", "x": 1}', 400),
    ("POST", "/admin/tokens/" + S0 + "/link", _J, MB, 413),
    ("POST", "/admin/tokens/" + S0 + "/resync", _J, b'{"code1": "1"}', 400),
    ("POST", "/admin/tokens/" + S0 + "/resync", _J, b'{"code1": "1", "code2": "2", "wide": "yes"}', 400),
    ("POST", "/admin/tokens/" + S0 + "/resync", {"content-type": "text/xml"}, b"<a/>", 415),
    ("POST", "/admin/tokens/" + S0 + "/unlock", _J, b'{"force": "true"}', 400),
    ("POST", "/admin/tokens/" + S0 + "/revoke", _J, b"{", 400),
    ("POST", "/admin/tokens/" + S0 + "/lost", _J, MB, 413),
    ("POST", "/admin/tokens/" + S0 + "/unlink", _J, b'{"force": "true"}', 400),
    ("POST", "/admin/tokens/KF-not-a-serial!/unlock", {}, b"", 400),
    ("POST", "/admin/tokens/" + make_serial(398) + "/unlock", {}, b"", 404),
    ("GET", "/admin/tokens/%ff", {}, b"", 400),
    ("POST", "/admin/tokens", _J, b'{"uri": "otpauth://hotp/x?secret=AAAA"}', 400),
    ("POST", "/admin/tokens", _J, json.dumps({"uri": "otpauth://" + "a" * 600}).encode(), 400),
    ("POST", "/admin/tokens", _J, b'{"uri": "https://example.com"}', 400),
    ("POST", "/admin/users", _J, b'{"user": "carol"}', 400),
    ("POST", "/admin/users", _J, b'{"user": "car ol", "password": "x"}', 400),
    ("POST", "/admin/users", _J, b'{"user": "alice", "password": "long enough pw"}', 409),
    ("POST", "/admin/users", _J, b'{"user": "carol", "password": "x", "twofa": "maybe"}', 400),
    ("POST", "/admin/users", _F, b"user=carol&password=%ff", 400),
    ("POST", "/admin/users/alice/disable-2fa", _J, b'{"now": "1"}', 400),
    ("POST", "/admin/users/nobody/disable-2fa", {}, b"", 404),
    ("GET", "/admin/audit?limit=0", {}, b"", 400),
    ("GET", "/admin/audit?limit=lots", {}, b"", 400),
    ("GET", "/admin/audit?user=" + "a" * 65, {}, b"", 400),
    ("GET", "/admin/nothing-here", {}, b"", 404),
]


def test_bad_requests_get_one_line_and_change_nothing(server):
    """Every refused request: its 4xx, the error shape of the README with one line, and the
    database's tables exactly as before. Calls with the admin key (so each reaches its endpoint)."""
    error_shape = readme_shapes()[2]
    before = dump(server["db"])
    seen = []
    for method, path, headers, body, status in BAD:
        path = path.replace(S0, server["serials"][0])
        r = server["client"].request(method, path, content=body, headers={**headers, **auth(server["keys"]["ops"])})
        seen.append((method, path[:40], len(body), r.status_code))
        assert r.status_code == status, (method, path[:60], body[:60], r.text[:300])
        got = r.json()
        assert set(got) == set(error_shape) and set(got["result"]) == set(error_shape["result"])
        assert got["result"]["status"] is False and got["result"]["error"]["code"] == status
        msg = got["result"]["error"]["message"]
        assert isinstance(msg, str) and 0 < len(msg) < 200 and "\n" not in msg, msg
        assert "123456" not in msg and "\\ud800" not in msg
    assert dump(server["db"]) == before, seen


def test_cli_api_keys_are_shown_once_and_stored_hashed(tmp_path, monkeypatch):
    from click.testing import CliRunner
    from keyfob.cli import main

    monkeypatch.delenv("KEYFOB_KEY", raising=False)
    for k, val in {"KEYFOB_DB": tmp_path / "v.db", "KEYFOB_KEY_FILE": tmp_path / "v.key"}.items():
        monkeypatch.setenv(k, str(val))
    monkeypatch.setenv("KEYFOB_ARGON2_PROFILE", "fast")

    def run(*args):
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    assert run("server", "init").exit_code == 0
    r = run("server", "api-key", "add", "--name", "web", "--scope", "validate", "--json")
    assert r.exit_code == 0, r.output
    key = json.loads(r.output)["key"]
    assert key.startswith("kf_") and len(key) >= 46
    listing = run("server", "api-key", "list", "--json")
    assert key not in listing.output and json.loads(listing.output)[0]["active"] is True
    assert key not in repr(dump(tmp_path / "v.db"))  # only its hash is kept
    with Verifier.open(tmp_path / "v.db", key_file=tmp_path / "v.key") as v:
        assert ApiKeys(v).check(key).name == "web"
    again = run("server", "api-key", "add", "--name", "web", "--scope", "admin")
    assert again.exit_code == 1 and len(again.output.strip().splitlines()) == 1  # the name is taken: refused
    assert run("server", "api-key", "revoke", "web").exit_code == 0
    with Verifier.open(tmp_path / "v.db", key_file=tmp_path / "v.key") as v:
        assert ApiKeys(v).check(key) is None
    before = dump(tmp_path / "v.db")
    twice = run("server", "api-key", "revoke", "web")
    assert twice.exit_code == 2 and "already revoked" in twice.output
    bad = run("server", "api-key", "add", "--name", "-x", "--scope", "validate")
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1
    assert dump(tmp_path / "v.db") == before
    missing = run("serve", "--db", str(tmp_path / "none.db"))
    assert missing.exit_code == 3 and len(missing.output.strip().splitlines()) == 1  # unavailable


def _self_signed(wd: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = wd / "cert.pem", wd / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_tls_and_a_trusted_proxy_through_uvicorns_options(server, tmp_path):
    """One more server: TLS by uvicorn, and 127.0.0.1 trusted as a proxy (its X-Forwarded-For names
    the client: the source the verifier throttles)."""
    import ssl

    cert, key = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    opts = ("--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--forwarded-allow-ips", "127.0.0.1")
    log = tmp_path / "tls.log"
    with keyfob_serve(server["db"], server["key_file"], log, *opts, scheme="https", verify=trust) as base:
        with httpx.Client(base_url=base, verify=trust, timeout=30) as c:
            body = {"user": "nobody", "pass": PW + "123456"}
            proxied = {**auth(server["keys"]["web"]), "X-Forwarded-For": "198.51.100.9"}
            r = c.post("/validate/check", json=body, headers=proxied)
            assert r.json() == readme_shapes()[1]
            why = c.get("/admin/explain/nobody", headers=auth(server["keys"]["ops"])).json()["result"]["value"]
            assert why["source"] == "198.51.100.9" and why["detail"] == "unknown-user"
        with pytest.raises(httpx.TransportError):  # plain HTTP to the TLS port gets no answer
            httpx.post(base.replace("https:", "http:") + "/validate/check", json=body, timeout=10)
