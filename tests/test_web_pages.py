"""The web security center in process (issue 13), written the way an attacker tries it: forms posted
without their CSRF token or with another session's, forged and stale cookies, a copied cookie after
sign-out, sign-in guessing (the same throttle as the API), the help desk from a plain user, bad
input; and that a refused sign-in reads the same whatever was wrong. Starlette's TestClient over
``create_app``, a verifier with a clock the test moves, pyotp making the codes (the browser test,
test_web_browser.py, types codes read off virtual tokens)."""

from __future__ import annotations

import base64
import re
import sqlite3
from html.parser import HTMLParser

import pyotp
import pytest
from fastapi.testclient import TestClient
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.server.app import create_app
from keyfob.verifier import Policy, Verifier
from keyfob.verifier.accounts import TEMPORARY_SECONDS, Accounts
from keyfob.web import sessions
from keyfob.web.pages import SIGNIN_FAILED

PW = "correct horse"
SEEDS = [bytes([n]) * 20 for n in (1, 2, 3, 4)]
SERIALS = [make_serial(700 + n) for n in range(4)]


class Clock:
    def __init__(self, t=1_800_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


class Site:
    """A verifier (alice with token 0, bob with token 1, helen the help desk with token 2, token 3
    in the inventory) and its app."""

    def __init__(self, tmp_path):
        self.db = tmp_path / "v.db"
        self.clock = Clock()
        self.v = Verifier.init(
            self.db, key=b"K" * 32, policy=Policy(password_profile="fast", user_rate_limit=3), clock=self.clock
        )
        self.v.import_records([TokenRecord(s, "hotp", "sha1", 6, seed) for s, seed in zip(SERIALS, SEEDS)])
        self.otp = [pyotp.HOTP(base64.b32encode(s).decode()) for s in SEEDS]
        self.used = [0, 0, 0, 0]
        for n, name in enumerate(("alice", "bob", "helen")):
            self.v.add_user(name, PW)
            assert self.v.link(name, SERIALS[n], self.code(n)).accepted
        Accounts(self.v).set_admin("helen", True)
        self.app = create_app(self.v)

    def code(self, n: int) -> str:
        """The next code of token ``n`` (as pressing it would show)."""
        c = self.otp[n].at(self.used[n])
        self.used[n] += 1
        return c

    def client(self, https=False, ip="testclient") -> TestClient:
        base = "https://testserver" if https else "http://testserver"
        return TestClient(self.app, base_url=base, client=(ip, 50000))

    def dump(self) -> dict:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return {
                t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
            }
        finally:
            con.close()


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.v.close()


def csrf(page) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def signin(c: TestClient, user: str, field: str, **extra):
    page = c.get("/web/signin")
    return c.post(
        "/web/signin", data={"csrf": csrf(page), "user": user, "password": field, **extra}, follow_redirects=False
    )


def signed_in(site, user="alice", n=0, https=False) -> TestClient:
    c = site.client(https)
    r = signin(c, user, PW + site.code(n))
    assert r.status_code == 303 and r.headers["location"] == "/web/security"
    return c


def test_sign_in_with_password_and_code_lists_my_tokens(site):
    c = signed_in(site)
    page = c.get("/web/security")
    assert page.status_code == 200
    assert SERIALS[0] in page.text and SERIALS[1] not in page.text  # mine only
    assert "Event (press)" in page.text and "2027-01-15 08:00 UTC" in page.text  # added and last used (the clock)
    # in two steps (a password manager fills the password field): the password, then the code
    c2 = site.client()
    page = c2.get("/web/signin?separate=1")
    r = c2.post("/web/signin/password", data={"csrf": csrf(page), "user": "alice", "password": PW})
    assert r.status_code == 200 and "Signing in as <strong>alice</strong>" in r.text
    r = c2.post("/web/signin/code", data={"csrf": csrf(r), "code": site.code(0)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/web/security"


def test_the_first_of_two_steps_checks_nothing_and_its_sealed_password_cannot_be_read_or_kept(site):
    c = site.client()
    before = site.dump()
    r = c.post(
        "/web/signin/password",
        data={"csrf": csrf(c.get("/web/signin?separate=1")), "user": "alice", "password": "wrong horse"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/web/signin/code"  # a wrong password is not told at this step
    assert site.dump() == before  # nothing checked, nothing counted
    raw = _cookie(c)
    assert "wrong horse" not in raw and "wrong horse" not in base64.urlsafe_b64decode(raw.split(".")[0] + "==").decode(
        "latin-1"
    )  # the password is sealed, not only signed
    r = c.post("/web/signin/code", data={"csrf": csrf(c.get("/web/signin/code")), "code": site.code(0)})
    assert r.status_code == 401 and SIGNIN_FAILED in r.text  # refused at the step with the code, as any other
    assert c.get("/web/signin/code", follow_redirects=False).headers["location"] == "/web/signin?separate=1"

    # the right password, then too long a wait: the first step is forgotten
    r = c.post(
        "/web/signin/password", data={"csrf": csrf(c.get("/web/signin?separate=1")), "user": "alice", "password": PW}
    )
    site.clock.t += sessions.PENDING + 1
    assert c.get("/web/signin/code", follow_redirects=False).headers["location"] == "/web/signin?separate=1"
    # a first step sealed by another server's key is none
    other = sessions.Cookies(b"another server's secret" * 2)
    forged = sessions.Session(csrf="x" * 43, pending=other.seal("alice", PW, site.clock(), 0))
    attacker = site.client()
    server = sessions.Cookies(site.v._box.session_key())  # as if the session's signature were known
    attacker.cookies.set(sessions.COOKIE, server.dump(forged), path="/web")
    assert attacker.get("/web/signin/code", follow_redirects=False).status_code == 303


def _refusal(r) -> str:
    assert r.status_code == 401
    return re.sub(r'value="[^"]*"', 'value=""', r.text)


def test_a_refused_sign_in_reads_the_same_whatever_was_wrong(site):
    good = site.code(0)
    assert signin(site.client(), "alice", PW + good).status_code == 303
    site.v.add_user("nina", PW, twofa=False)
    tries = {
        "wrong password": ("alice", "wrong horse" + site.code(0)),
        "wrong code": ("alice", PW + "000000"),
        "replayed code": ("alice", PW + good),
        "no code": ("alice", PW),
        "space before the code": ("alice", PW + " " + site.code(0)),
        "code for a user without 2fa": ("nina", PW + "123456"),
        "unknown user": ("mallory", PW + "123456"),
        "malformed user": ("a b", PW + "123456"),
    }
    pages = {why: _refusal(signin(site.client(), user, field)) for why, (user, field) in tries.items()}
    first = pages["wrong password"]
    assert SIGNIN_FAILED in first and "no space" in first  # the hints
    for why, page in pages.items():
        assert page == first, why  # the user-name field is refilled blank-compared: the page is identical


def test_forms_without_their_csrf_token_or_with_another_sessions_are_refused_and_change_nothing(site):
    c = signed_in(site)
    other = signed_in(site, "bob", 1)
    theirs = csrf(other.get("/web/security"))
    posts = {
        "/web/security/add": {"serial": SERIALS[3], "code": site.otp[3].at(0), "description": "x"},
        "/web/security/remove": {"serial": SERIALS[0], "code": site.otp[0].at(site.used[0])},
        "/web/security/twofa": {"password": PW, "code": site.otp[0].at(site.used[0])},
        "/web/security/backup": {"password": PW + site.otp[0].at(site.used[0])},
        "/web/security/resync": {"serial": SERIALS[0], "code1": "1", "code2": "2", "password": PW},
        "/web/signout": {},
    }
    before = site.dump()
    for path, data in posts.items():
        for token in (None, theirs, ""):
            sent = dict(data) if token is None else {**data, "csrf": token}
            r = c.post(path, data=sent, follow_redirects=False)
            assert r.status_code == 403, (path, token)
            assert "not sent from this site" in r.text
    # a sign-in posted from elsewhere (login CSRF: a victim signed into the attacker's account)
    field = {"user": "alice", "password": PW + site.otp[0].at(site.used[0])}
    for path, data in (("/web/signin", field), ("/web/signin/password", field), ("/web/signin/code", {"code": "1"})):
        assert site.client().post(path, data=data).status_code == 403, path
    assert site.dump() == before
    assert c.get("/web/security", follow_redirects=False).status_code == 200  # still signed in


def test_the_session_cookie_is_httponly_strict_and_secure_behind_tls(site):
    for https in (False, True):
        c = site.client(https)
        r = c.get("/web/signin")
        cookie = r.headers["set-cookie"]
        flags = {p.strip().split("=")[0].lower() for p in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= flags
        assert "samesite=strict" in cookie.lower() and "path=/web" in cookie.lower()
        assert ("secure" in flags) is https
        assert ("strict-transport-security" in r.headers) is https


def test_every_page_carries_the_security_headers_and_needs_no_inline_script_or_style(site):
    c = signed_in(site, "helen", 2)
    pages = [
        "/web/signin",
        "/web/signin?separate=1",
        "/web/security",
        "/web/security/add",
        "/web/security/twofa",
        "/web/security/backup",
        f"/web/security/resync?serial={SERIALS[2]}",
        f"/web/security/remove?serial={SERIALS[2]}",
        "/web/helpdesk?q=a",
        "/web/helpdesk/user?name=alice",
        "/web/static/style.css",
        "/web/nowhere",
    ]
    for path in pages:
        r = c.get(path)
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp, path
        assert "script-src" not in csp  # no script at all: default-src 'none' covers it
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["cache-control"] == "no-store" and r.headers["referrer-policy"] == "no-referrer", path
        if r.headers["content-type"].startswith("text/html"):
            assert r.status_code in (200, 404), path
            assert not re.search(r"<script|<style|\sstyle=|\son[a-z]+=", r.text, re.I), path
            assert _unlabelled(r.text) == [], path  # a label on every field


class _Fields(HTMLParser):
    """The ids of a page's visible fields and the ids its labels name."""

    def __init__(self):
        super().__init__()
        self.fields, self.labels = [], set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.fields.append(a.get("id"))
        if tag == "label":
            self.labels.add(a.get("for"))


def _unlabelled(html: str) -> list:
    p = _Fields()
    p.feed(html)
    return [f for f in p.fields if f is None or f not in p.labels]


def _cookie(c: TestClient) -> str:
    return c.cookies.get(sessions.COOKIE)


def test_a_forged_or_tampered_cookie_is_no_session(site):
    c = signed_in(site)
    raw = _cookie(c)
    other_key = sessions.Cookies(b"not the server's secret" * 2)
    made_elsewhere = other_key.dump(sessions.signed_in("helen", 0, site.clock()))
    forged = made_elsewhere.rsplit(".", 1)[0] + "." + raw.rsplit(".", 1)[1]  # helen's payload, alice's signature
    for bad in (forged, made_elsewhere, raw[:-2], "", "x" * 5000):
        attacker = site.client()
        attacker.cookies.set(sessions.COOKIE, bad, path="/web")
        r = attacker.get("/web/helpdesk", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/web/signin", bad[:20]


def test_a_session_ends_when_idle_and_after_its_lifetime(site):
    c = signed_in(site)
    site.clock.t += sessions.IDLE - 1
    assert c.get("/web/security", follow_redirects=False).status_code == 200  # each use moves the idle end
    site.clock.t += sessions.IDLE - 1
    assert c.get("/web/security", follow_redirects=False).status_code == 200
    site.clock.t += sessions.IDLE + 1
    assert c.get("/web/security", follow_redirects=False).headers["location"] == "/web/signin"

    c = signed_in(site)
    end = site.clock.t + sessions.LIFETIME
    while site.clock.t + sessions.IDLE - 1 < end:  # kept busy, it still ends at its lifetime
        site.clock.t += sessions.IDLE - 1
        assert c.get("/web/security", follow_redirects=False).status_code == 200
    site.clock.t = end + 1
    assert c.get("/web/security", follow_redirects=False).headers["location"] == "/web/signin"


def test_sign_out_ends_the_session_even_for_a_copied_cookie_and_on_other_devices(site):
    c = signed_in(site)
    phone = signed_in(site)
    copied = _cookie(c)
    r = c.post("/web/signout", data={"csrf": csrf(c.get("/web/security"))}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/web/signin?out=1"
    thief = site.client()
    thief.cookies.set(sessions.COOKIE, copied, path="/web")
    for who in (c, thief, phone):
        assert who.get("/web/security", follow_redirects=False).headers["location"] == "/web/signin"
    assert site.v.audit(action="web-signout")[0].actor == "web:alice"


def test_sign_in_guessing_is_throttled_by_the_apis_rules(site):
    """user_rate_limit=3: three wrong guesses from one source are free, then that source is in
    back-off, and even the right password and code from it are refused (the same page) until the
    back-off ends; the audit calls them throttled."""
    for _ in range(3):
        _refusal(signin(site.client(), "alice", "guess" + "123456"))
    right = PW + site.code(0)
    assert _refusal(signin(site.client(), "alice", right))
    assert site.v.explain("alice").detail == "throttled" or site.v.audit(limit=1)[0].detail == "throttled"
    site.clock.t += site.v.policy.backoff_max + 1
    assert signin(site.client(), "alice", right).status_code == 303
    assert site.v.audit(action="validate", limit=1)[0].via == "web"


def test_the_help_desk_needs_an_admin_session(site):
    anonymous = site.client()
    assert anonymous.get("/web/helpdesk", follow_redirects=False).headers["location"] == "/web/signin"
    alice = signed_in(site)
    token = csrf(alice.get("/web/security"))
    before = site.dump()
    assert alice.get("/web/helpdesk?q=b").status_code == 403
    assert alice.get("/web/helpdesk/user?name=bob").status_code == 403
    check = {"csrf": token, "name": "bob", "how": "photo ID seen in person"}
    for path, extra in (("lost", {"serial": SERIALS[1]}), ("backup", {}), ("temporary", {})):
        r = alice.post("/web/helpdesk/" + path, data={**check, **extra})
        assert r.status_code == 403 and "help-desk staff" in r.text, path
        r = anonymous.post("/web/helpdesk/" + path, data={**check, **extra, "csrf": csrf(anonymous.get("/web/signin"))})
        assert r.status_code == 403, path
    assert site.dump() == before
    # taking the help desk away ends the admin's sessions at once
    helen = signed_in(site, "helen", 2)
    Accounts(site.v).set_admin("helen", False)
    assert helen.get("/web/helpdesk", follow_redirects=False).headers["location"] == "/web/signin"


def test_the_help_desk_records_who_checked_what_and_its_temporary_code_lasts_one_day(site):
    helen = signed_in(site, "helen", 2)
    page = helen.get("/web/helpdesk/user?name=alice")
    assert SERIALS[0] in page.text
    r = helen.post("/web/helpdesk/temporary", data={"csrf": csrf(page), "name": "alice", "how": ""})
    assert r.status_code == 400 and "Choose how you checked" in r.text
    assert site.v.audit(action="temporary-code") == []
    r = helen.post(
        "/web/helpdesk/lost",
        data={"csrf": csrf(page), "name": "alice", "serial": SERIALS[0], "how": "called back on the number on file"},
    )
    assert r.status_code == 200 and "marked lost" in r.text
    r = helen.post(
        "/web/helpdesk/temporary",
        data={"csrf": csrf(page), "name": "alice", "how": "photo ID seen in person", "note": "ticket 42"},
    )
    code = re.search(r'<li class="mono">([a-z0-9-]+)</li>', r.text).group(1)
    checks = site.v.audit(action="identity-check")
    assert [a.actor for a in checks] == ["web:helen", "web:helen"]
    assert checks[0].detail == "for temporary-code: photo ID seen in person (ticket 42)"
    assert site.v.audit(action="token-lost")[0].actor == "web:helen"
    assert site.v.audit(action="temporary-code")[0].actor == "web:helen"
    assert not site.v.verify("alice", PW + site.code(0)).accepted  # the lost token's codes are refused

    site.clock.t += TEMPORARY_SECONDS + 1  # a day later the temporary code is refused
    assert not site.v.verify("alice", PW + code).accepted
    site.clock.t -= 2  # within its day it works, once
    assert site.v.verify("alice", PW + code).accepted
    assert not site.v.verify("alice", PW + code).accepted


def test_bad_input_is_one_line_and_writes_nothing(site):
    c = signed_in(site)
    token = csrf(c.get("/web/security"))
    before = site.dump()
    bad = [
        {"serial": SERIALS[3], "code": "1" * 17},  # longer than a code field may be
        {"serial": SERIALS[3], "code": "123456", "extra": "1"},  # a field no form has
        {"serial": SERIALS[3] + "\x00", "code": "123456"},  # a control character
        {"serial": "x" * 65, "code": "123456"},
    ]
    for data in bad:
        r = c.post("/web/security/add", data={"csrf": token, **data})
        assert r.status_code == 400, data
        assert len(re.findall(r'<p class="alert" role="alert">([^<\n]+)</p>', r.text)) == 1, data
    r = c.post(
        "/web/security/add",
        content=b"csrf=" + token.encode() + b"&serial=%ff&code=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400 and "UTF-8" in r.text
    assert site.dump() == before


def test_my_pages_reach_only_my_tokens(site):
    c = signed_in(site)
    token = csrf(c.get("/web/security"))
    before = site.dump()
    assert c.get(f"/web/security/remove?serial={SERIALS[1]}").status_code == 404  # bob's
    r = c.post(
        "/web/security/remove", data={"csrf": token, "serial": SERIALS[1], "code": site.otp[1].at(9), "password": PW}
    )
    assert r.status_code == 404
    r = c.post(
        "/web/security/resync",
        data={"csrf": token, "serial": SERIALS[1], "code1": "123456", "code2": "654321", "password": PW},
    )
    assert r.status_code == 404
    assert site.dump() == before


def test_add_resync_remove_two_factor_off_and_backup_codes(site):
    c = signed_in(site)
    token = csrf(c.get("/web/security"))
    r = c.post(
        "/web/security/add", data={"csrf": token, "serial": SERIALS[3], "code": "000000", "password": PW + site.code(0)}
    )
    assert r.status_code == 400 and 'id="code-error"' in r.text  # the error next to its field
    r = c.post(
        "/web/security/add",
        data={
            "csrf": token,
            "serial": SERIALS[3],
            "code": site.code(3),
            "description": "spare <b>",
            "password": PW + site.code(0),
        },
        follow_redirects=False,
    )
    assert r.headers["location"] == "/web/security?done=added"
    page = c.get("/web/security")
    assert SERIALS[3] in page.text and "spare &lt;b&gt;" in page.text  # escaped
    site.used[3] += 12  # pressed twelve times away from any sign-in
    r = c.post(
        "/web/security/resync",
        data={"csrf": token, "serial": SERIALS[3], "code1": site.code(3), "code2": site.code(3), "password": PW},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/web/security?done=resynced"
    r = c.post("/web/security/remove", data={"csrf": token, "serial": SERIALS[3], "code": site.code(0), "password": PW})
    assert r.status_code == 400  # token 0's code does not remove token 3
    r = c.post(
        "/web/security/remove",
        data={"csrf": token, "serial": SERIALS[3], "code": site.code(3), "password": PW},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/web/security?done=removed"
    assert site.v.token(SERIALS[3]).state == "unassigned"
    r = c.post("/web/security/backup", data={"csrf": token, "password": PW + site.code(0)})
    codes = re.findall(r'<li class="mono">([a-z0-9-]+)</li>', r.text)
    assert len(codes) == site.v.policy.backup_codes
    r = c.post("/web/security/remove", data={"csrf": token, "serial": SERIALS[0], "code": codes[0], "password": PW})
    assert r.status_code == 400 and site.v.user("alice").backup_codes == len(codes)  # not used up for nothing
    r = c.post(
        "/web/security/twofa", data={"csrf": token, "password": PW, "code": site.code(0)}, follow_redirects=False
    )
    assert r.headers["location"] == "/web/security?done=twofa-off"
    assert signin(site.client(), "alice", PW).status_code == 303
    done = {(a.action, a.actor) for a in site.v.audit(user="alice") if a.result == "ok" and a.action != "validate"}
    assert done == {
        ("user-add", "admin"),
        ("token-link", "admin"),  # the set-up
        ("token-link", "web:alice"),
        ("token-resync", "alice"),  # the library's self-service resync names the user
        ("token-unlink", "web:alice"),
        ("backup-codes", "web:alice"),
        ("user-2fa-off", "web:alice"),
    }


def test_a_password_reset_or_a_token_marked_lost_ends_the_users_sessions(site):
    """A thief's session of alice's, taken over: the admin resets her password, then the help desk
    marks her token lost; each of them ends every session of hers."""
    thief = signed_in(site)
    site.v.set_password("alice", "brand new password")
    assert thief.get("/web/security", follow_redirects=False).headers["location"] == "/web/signin"
    c = site.client()
    assert signin(c, "alice", "brand new password" + site.code(0)).status_code == 303
    h = signed_in(site, "helen", 2)
    p = h.get("/web/helpdesk/user?name=alice")
    r = h.post(
        "/web/helpdesk/lost",
        data={"csrf": csrf(p), "name": "alice", "how": "photo ID seen in person", "serial": SERIALS[0], "note": ""},
    )
    assert r.status_code == 200
    assert c.get("/web/security", follow_redirects=False).headers["location"] == "/web/signin"
    assert h.get("/web/security", follow_redirects=False).status_code == 200  # the help desk's own stays


def test_a_taken_over_session_adds_no_token_without_the_password(site):
    """The thief holds alice's session and a token of the inventory, not her password."""
    thief = signed_in(site)
    token = csrf(thief.get("/web/security/add"))
    r = thief.post("/web/security/add", data={"csrf": token, "serial": SERIALS[3], "code": site.code(3)})
    assert r.status_code == 400  # the password is a required field
    r = thief.post(
        "/web/security/add",
        data={"csrf": token, "serial": SERIALS[3], "code": site.code(3), "password": "guess" + "123456"},
    )
    assert r.status_code == 400 and 'id="password-error"' in r.text
    assert site.v.token(SERIALS[3]).state == "unassigned"


def test_a_taken_over_session_cannot_test_passwords_while_the_user_is_in_back_off(site):
    """The thief guesses alice's password on the re-authentication forms; after the free failures
    (user_rate_limit=3) every form is refused unchecked, even the right password and code, so no
    answer (nor a token's lock) can confirm a guess; and Remove asks for the password too. Each
    request from another address (no source back-off to hide behind)."""
    site.v.new_backup_codes("alice")  # a way in without her token: Remove may remove her only one
    codes = site.dump()["backup_codes"]
    taken = signed_in(site)
    token = csrf(taken.get("/web/security"))
    ips = (f"198.51.100.{n}" for n in range(1, 100))

    def thief():
        c = site.client(ip=next(ips))
        c.cookies.set(sessions.COOKIE, _cookie(taken), path="/web")
        return c

    for guess in ("123456", "letmein", "dragon"):
        r = thief().post("/web/security/twofa", data={"csrf": token, "password": guess, "code": "000000"})
        assert r.status_code == 400
    forms = [
        ("twofa", {"password": PW, "code": site.code(0)}),
        ("backup", {"password": PW + site.code(0)}),
        ("remove", {"serial": SERIALS[0], "password": PW, "code": site.code(0)}),
        ("add", {"serial": SERIALS[3], "code": site.code(3), "password": PW + site.code(0)}),
        ("resync", {"serial": SERIALS[0], "code1": site.code(0), "code2": site.code(0), "password": PW}),
    ]
    for form, data in forms:
        r = thief().post("/web/security/" + form, data={"csrf": token, **data}, follow_redirects=False)
        assert r.status_code == 400 and "Too many failed tries" in r.text, form
    assert site.v.user("alice").twofa and site.dump()["backup_codes"] == codes
    assert site.v.token(SERIALS[0]).state == "active" and site.v.token(SERIALS[3]).state == "unassigned"
    assert site.v.token(SERIALS[0]).fail_count == 0  # nothing was checked against her token
    site.clock.t += site.v.policy.backoff_max + 1
    r = thief().post("/web/security/remove", data={"csrf": token, "serial": SERIALS[0], "code": site.code(0)})
    assert r.status_code == 400 and site.v.token(SERIALS[0]).state == "active"  # no password: not removed


def test_no_third_party_script_page_shares_the_security_centers_origin(site):
    """FastAPI's Swagger UI (/docs) loads a CDN's script: on this origin it could read /web pages.
    /docs gives the OpenAPI description itself (issue 12), never a page with a script."""
    c = site.client()
    assert c.get("/redoc").status_code == 404
    docs = c.get("/docs")  # followed to /openapi.json
    assert docs.headers["content-type"] == "application/json" and "<script" not in docs.text
    assert "/validate/check" in docs.json()["paths"]


def test_removing_the_only_token_with_two_factor_on_is_refused_until_there_is_another_way_in(site):
    c = signed_in(site)
    token = csrf(c.get("/web/security"))
    page = c.get(f"/web/security/remove?serial={SERIALS[0]}")
    assert 'id="last-token"' in page.text and 'action="/web/security/remove"' not in page.text
    data = {"csrf": token, "serial": SERIALS[0], "password": PW, "code": site.code(0)}
    r = c.post("/web/security/remove", data=data)
    assert r.status_code == 409 and 'id="last-token"' in r.text
    assert site.v.token(SERIALS[0]).state == "active"
    c.post("/web/security/backup", data={"csrf": token, "password": PW + site.code(0)})
    r = c.post("/web/security/remove", data={**data, "code": site.code(0)}, follow_redirects=False)
    assert r.headers["location"] == "/web/security?done=removed"  # the backup codes are a way in


def test_failed_adds_are_counted_like_logins_and_answer_alike(site):
    """A signed-in user (password and code right each time) probes the inventory: an unknown serial,
    a serial in use, a wrong code: one answer for all three, each counted on the user's throttle
    (user_rate_limit=3), after which even a right add waits."""
    c = signed_in(site)
    token = csrf(c.get("/web/security"))

    def add(serial, code):
        data = {"csrf": token, "serial": serial, "code": code, "password": PW + site.code(0)}
        return c.post("/web/security/add", data=data, follow_redirects=False)

    answers = [add(make_serial(799), "123456"), add(SERIALS[1], site.otp[1].at(50)), add(SERIALS[3], "000000")]
    errors = [re.search(r'id="(\w+)-error">([^<]*)<', r.text).groups() for r in answers]
    assert [r.status_code for r in answers] == [400] * 3 and len(set(errors)) == 1, errors
    r = add(SERIALS[3], site.code(3))
    assert r.status_code == 400 and "Too many failed tries" in r.text
    assert site.v.token(SERIALS[3]).state == "unassigned"
    site.clock.t += site.v.policy.backoff_max + 1  # within the session's idle time
    assert add(SERIALS[3], site.code(3)).headers["location"] == "/web/security?done=added"


def test_a_copied_first_step_is_stale_after_the_users_sign_out(site):
    """Alice's first step copied off a shared computer; she signs in and out; the copy is refused."""
    v = site.client()
    page = v.get("/web/signin?separate=1")
    r = v.post("/web/signin/password", data={"csrf": csrf(page), "user": "alice", "password": PW})
    stolen = _cookie(v)
    r = v.post("/web/signin/code", data={"csrf": csrf(r), "code": site.code(0)}, follow_redirects=False)
    assert r.headers["location"] == "/web/security"
    v.post("/web/signout", data={"csrf": csrf(v.get("/web/security"))})
    site.clock.t += 60
    a = site.client(ip="198.51.100.7")
    a.cookies.set(sessions.COOKIE, stolen, path="/web")
    assert a.get("/web/signin/code", follow_redirects=False).headers["location"] == "/web/signin?separate=1"
    data = {"csrf": csrf(a.get("/web/signin")), "code": site.code(0)}
    r = a.post("/web/signin/code", data=data, follow_redirects=False)
    assert r.headers["location"] == "/web/signin?separate=1"
    assert a.get("/web/security", follow_redirects=False).headers["location"] == "/web/signin"


def test_a_sign_ins_argon2_verifications_depend_on_the_fields_shape_alone(site):
    """The reviewer's field ends in six digits and its last twelve are a well-formed backup code:
    a known user with backup codes, one without, a user without 2FA and no such user all cost the
    same number of Argon2 verifications (counted, not timed); a throttled attempt costs none, so a
    flood buys no Argon2 work (issue 12: refused before any)."""
    site.v.add_user("carol", PW, twofa=False)
    site.v.new_backup_codes("bob")
    pw = site.v._pw
    calls = []
    real = pw.verify  # the one Argon2 call (the dummy hash's too)
    pw.verify = lambda *a: calls.append(1) or real(*a)
    field = "guess234567892345"
    ips = (f"203.0.113.{n}" for n in range(1, 100))
    counts = {}
    for user in ("zed", "alice", "bob", "carol"):
        calls.clear()
        assert signin(site.client(ip=next(ips)), user, field).status_code == 401
        counts[user] = len(calls)
    for _ in range(3):  # this address's free failures (user_rate_limit=3)
        signin(site.client(ip="203.0.113.250"), "alice", field)
    calls.clear()
    assert "Sign-in failed" in signin(site.client(ip="203.0.113.250"), "alice", field).text  # source throttled
    counts["throttled"] = len(calls)
    assert site.v.audit(limit=1)[0].detail == "throttled"
    throttled = counts.pop("throttled")
    assert len(set(counts.values())) == 1 and counts["zed"] >= 2, counts
    assert throttled == 0


def test_a_copied_first_step_gets_no_try_of_its_own(site):
    """The first step copied between the steps: the owner's code step uses it up, and the copies,
    each from another address within the five minutes, get no try (nor a code counted on her token)."""
    v = site.client()
    page = v.get("/web/signin?separate=1")
    r = v.post("/web/signin/password", data={"csrf": csrf(page), "user": "alice", "password": PW})
    stolen = _cookie(v)
    assert v.post("/web/signin/code", data={"csrf": csrf(r), "code": "000000"}).status_code == 401  # her typo
    for n in range(3):
        a = site.client(ip=f"198.51.100.{n + 1}")
        a.cookies.set(sessions.COOKIE, stolen, path="/web")
        data = {"csrf": csrf(a.get("/web/signin")), "code": site.code(0)}
        r = a.post("/web/signin/code", data=data, follow_redirects=False)
        assert r.headers["location"] == "/web/signin?separate=1", n
    assert site.v.token(SERIALS[0]).fail_count == 1  # her typo only
