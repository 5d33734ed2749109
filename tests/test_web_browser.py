"""The security center as a person uses it (issue 13): Debian's Chromium, driven by Selenium through
its chromedriver, on the pages of a real ``keyfob serve``, with two virtual tokens (unix tier)
whose codes and serial are read off their emulated OLEDs and typed. The keyboard alone: every field
is reached by its autofocus or Tab, every link and button by Tab and Enter.

Alice signs in with password+code, adds her second token by serial + code with a description
(and her password+code), sees it listed, resyncs it after pressing it twelve times unseen, removes it, has a form posted
without its CSRF token refused, turns two-factor off, makes backup codes and signs out. Then Helen
of the help desk signs in in two steps (the password, then the code on a page of its own), finds
Alice and issues her a one-day code after recording the identity check.

Every page is saved as a PNG at desktop width and at 390 px (a phone) in ``artefacts/screenshots``
(gitignored); with ``KEYFOB_SCREENSHOTS=docs/screenshots`` (``make screenshots``) they are written
there too: the README's pictures."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import dev_provision
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.sim.textread import text_lines
from keyfob.verifier import Policy, Verifier
from keyfob.verifier.accounts import Accounts

from bench.servers import keyfob_serve

pytestmark = pytest.mark.timeout(240)

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
ROOT = Path(__file__).resolve().parent.parent
ARTEFACTS = ROOT / "artefacts" / "screenshots"
WIDTHS = {"desktop": 1280, "phone": 390}
PW = "correct horse"


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"browser test skipped: {path} is missing (make browser-tools installs chromium and chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "browser test skipped: selenium is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture
def browser():
    why = _missing()
    if why:
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="keyfob-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        opts.add_argument(arg)
    # an explicit driver: Selenium Manager (which would download one) is never run
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Person:
    """A person at the browser, with the keyboard only."""

    def __init__(self, driver, base: str):
        self.d = driver
        self.base = base
        self.shots: list[str] = []
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        self.extra = os.environ.get("KEYFOB_SCREENSHOTS")

    def keys(self, *keys) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.d).send_keys(*keys).perform()

    def type(self, *fields: str) -> None:
        """Type into the focused field, then Tab to the next one for each further value."""
        from selenium.webdriver.common.keys import Keys

        for n, text in enumerate(fields):
            if n:
                self.keys(Keys.TAB)
            if text:
                self.keys(text)

    def enter(self) -> None:
        """Press Enter on a link or in a form, and wait for the page it leads to (every one here does)."""
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.wait import WebDriverWait

        old = self.d.find_element("tag name", "html")
        self.keys(Keys.ENTER)
        wait = WebDriverWait(self.d, 30)  # a bound for a loaded machine, not a timed assertion
        wait.until(ec.staleness_of(old))
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")

    def tab_to(self, match, most: int = 60):
        """Tab until the focused element satisfies ``match`` (given the element); it must be reached."""
        from selenium.webdriver.common.keys import Keys

        self.d.find_element("tag name", "body")  # the page is there
        for _ in range(most):
            self.keys(Keys.TAB)
            el = self.d.switch_to.active_element
            if match(el):
                return el
        raise AssertionError(f"not reachable with Tab on {self.d.current_url}")

    def follow(self, text: str) -> None:
        """Tab to the link or button whose text starts with ``text`` and press Enter."""
        self.tab_to(lambda el: el.text.strip().startswith(text))
        self.enter()

    def follow_href(self, part: str) -> None:
        self.tab_to(lambda el: part in (el.get_attribute("href") or ""))
        self.enter()

    def at(self, path: str) -> None:
        assert self.d.current_url == self.base + path, self.d.current_url

    def text(self) -> str:
        return self.d.find_element("tag name", "main").text

    def shot(self, name: str) -> None:
        """The whole page at each width (the device metrics set, so the layout width is exact)."""
        for label, width in WIDTHS.items():
            metrics = {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": width < 600}
            self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            height = self.d.execute_script("return document.documentElement.scrollHeight")
            self.d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": max(height, 400)})
            out = ARTEFACTS / f"{name}-{label}.png"
            self.d.save_screenshot(str(out))
            if self.extra:
                Path(self.extra).mkdir(parents=True, exist_ok=True)
                shutil.copy(out, Path(self.extra) / out.name)
        self.d.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        self.shots.append(name)


def read_code(tok) -> str:
    """Press the token's button and read the code off its screen."""
    tok.press()
    tok.wait_idle()
    code = tok.screen().digits()
    assert code is not None and len(code) == 6
    return code


def read_serial(tok) -> str:
    tok.long_press()
    tok.wait_idle()
    lines = text_lines(tok.screen())
    return next(line for line in lines if line.startswith("KF"))


def test_a_person_manages_their_tokens_with_the_keyboard_alone(make_token, browser, tmp_path):
    db, key_file = tmp_path / "v.db", tmp_path / "v.key"
    made = []
    for n, name in enumerate(("spare", "ring")):
        tok = make_token(name)
        tok.power_on()
        seed, serial = secrets.token_bytes(20), make_serial(9100 + n)
        dev_provision(tok, seed, serial=serial)
        made.append((tok, TokenRecord(serial, "hotp", "sha1", 6, seed)))
    (ring, ring_rec), (spare, spare_rec) = made[1], made[0]
    with Verifier.init(db, key_file=key_file, policy=Policy(password_profile="fast")) as v:
        v.import_records([ring_rec, spare_rec])
        v.add_user("alice", PW)
        assert v.link("alice", ring_rec.serial, read_code(ring), description="key ring").accepted
        v.add_user("helen", PW)
        Accounts(v).set_admin("helen", True)
    with keyfob_serve(db, key_file, tmp_path / "serve.log") as base:
        p = Person(browser, base)
        browser.get(base + "/")
        p.at("/web/signin")
        p.shot("signin")

        # a wrong sign-in: one message and the hints
        p.type("alice", "wrong horse123456")
        p.enter()
        assert "Sign-in failed." in p.text() and "no space" in p.text()
        p.shot("signin-failed")
        p.type(PW + read_code(ring))  # the user name is refilled; the password field has the focus
        p.enter()
        p.at("/web/security")
        assert ring_rec.serial in p.text() and "key ring" in p.text()
        p.shot("security")

        # add the spare by the serial on its screen and its code, with a description
        p.follow("Add a token")
        p.at("/web/security/add")
        p.shot("add")
        serial = read_serial(spare)
        assert serial == spare_rec.serial
        p.type(serial, read_code(spare), "spare, blue case", PW + read_code(ring))  # and re-authenticated
        p.enter()
        assert "The token was added." in p.text()
        row = browser.find_element("xpath", f"//tr[td[text()='{serial}']]").text
        assert "spare, blue case" in row and "active" in row
        p.shot("security-two-tokens")

        # pressed twelve times where nobody saw it: the resync finds it from two codes in a row
        for _ in range(12):
            spare.press()
            spare.wait_idle()
        p.follow_href(f"/web/security/resync?serial={serial}")
        p.shot("resync")
        p.type(read_code(spare), read_code(spare), PW)
        p.enter()
        assert "The token works again." in p.text()

        p.follow_href(f"/web/security/remove?serial={serial}")
        p.shot("remove")
        p.type(PW, read_code(spare))
        p.enter()
        assert "The token was removed." in p.text() and serial not in p.text()

        # a form whose CSRF token is gone (as a forged one would come) is refused
        p.follow("Turn two-factor sign-in off")
        p.shot("twofa")
        browser.execute_script("document.querySelector('main form input[name=csrf]').remove()")
        p.type(PW, read_code(ring))
        p.enter()
        assert "Form refused" in p.text() and "not sent from this site" in p.text()
        p.shot("form-refused")
        p.follow("Back")
        p.follow("Turn two-factor sign-in off")
        p.type(PW, read_code(ring))
        p.enter()
        assert "Two-factor sign-in is off" in p.text()
        p.shot("security-2fa-off")

        p.follow("Make new backup codes")
        p.shot("backup")
        p.type(PW)  # two-factor is off: the password alone
        p.enter()
        assert len(browser.find_elements("css selector", "ul.codes li")) == 10
        p.shot("backup-codes")
        p.follow("Done")

        p.follow("Sign out alice")
        p.at("/web/signin?out=1")
        assert "You are signed out." in p.text()
        p.shot("signed-out")
        browser.get(base + "/web/security")  # the old session is over
        p.at("/web/signin")

        # the help desk: Helen uses the spare now, and signs in in two steps
        with Verifier.open(db, key_file=key_file) as v:
            assert v.link("helen", spare_rec.serial, read_code(spare)).accepted
        p.follow("Type the code on a page of its own")
        p.shot("signin-separate")
        p.type("helen", PW)
        p.enter()
        p.at("/web/signin/code")
        p.shot("signin-code")
        p.type(read_code(spare))
        p.enter()
        p.at("/web/security")
        p.follow("Help desk")
        p.type("ali")
        p.enter()
        p.shot("helpdesk")
        p.follow("alice")
        p.shot("helpdesk-user")
        from selenium.webdriver.common.keys import Keys

        p.tab_to(lambda el: el.get_attribute("id") == "how-temporary")
        p.keys(Keys.DOWN)  # the first way of checking: photo ID seen in person
        p.type("", "ticket 7")  # Tab from the select to the note
        p.follow("Issue a one-day code")
        assert "A temporary code" in p.text() and "For alice" in p.text()
        p.shot("temporary-code")

    with Verifier.open(db, key_file=key_file) as v:
        check = v.audit(action="identity-check")[0]
        assert (check.actor, check.user, check.detail) == (
            "web:helen",
            "alice",
            "for temporary-code: photo ID seen in person (ticket 7)",
        )
        assert v.audit(action="temporary-code")[0].actor == "web:helen"
        assert [a.actor for a in v.audit(action="token-unlink")] == ["web:alice"]
    assert len(p.shots) == 18
