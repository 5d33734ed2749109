"""Fixtures shared by the tests: virtual tokens (by tier) and verifier databases (by engine).

The firmware is compiled once per test process and deployed once, with mpremote, onto a
"golden" virtual flash; each test then gets its own copy of that flash, as if it took a
freshly flashed token out of the box.

Two tiers (docs/internals.md, "Two tiers"): ``unix`` (the MicroPython unix port with the sim
board) and ``pico`` (the real rp2 port in an emulated RP2040, boards/rp2040 deployed unchanged).
A test module that holds on both says ``pytestmark = on_both_tiers``; its ``make_token`` then
makes the tier's token. The Pico tier is skipped, with one line saying why, only where its
inputs (the UF2, the boot ROM, rp2040js) are missing.

Verifier databases (tests/databases.py): a test that takes ``db`` (one fresh database) or
``make_db`` (a factory, for several) runs once on SQLite and once on PostgreSQL, a throwaway
server started once per test process (per xdist worker). The PostgreSQL cases are skipped, with
one line saying why, only where PostgreSQL's server binaries are missing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import pytest
from databases import KINDS, Databases, postgresql_missing
from keyfob import build
from keyfob.sim import SimError, VirtualToken
from keyfob.sim.devtools import dev_provision  # noqa: F401  (re-exported for the tests)
from oracles import b32  # noqa: F401  (re-exported for the tests)


@pytest.fixture(scope="session")
def firmware_files(tmp_path_factory) -> list[tuple[Path, str]]:
    return build.build("sim", tmp_path_factory.mktemp("build"))


@contextlib.contextmanager
def _shared(tmp_path_factory, name: str):
    """A folder shared by the session's processes (the xdist workers of one run; one process
    without xdist), held under a lock: the first process to come makes what it holds, the others
    find it made. Only read afterwards (tests take copies), so the tests stay independent."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # pytest-N/popen-gwK: pytest-N is this run's, common to its workers
    folder = root / f"shared-{name}"
    folder.mkdir(exist_ok=True)
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield folder
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _golden(tmp_path_factory, name: str, token_class, files, image: str) -> Path:
    """A token's flash with ``files`` deployed by mpremote, the way it lands on a board, made once
    per run (a deploy per xdist worker was CPU spent thrice); the path of its ``image``."""
    with _shared(tmp_path_factory, name) as wd:
        if not (wd / "done").exists():
            with token_class(wd) as tok:
                tok.power_on()
                tok.deploy(files)
                tok.wait_idle()
                tok.power_off()
            (wd / "done").touch()
    return wd / image


@pytest.fixture(scope="session")
def golden_flash(tmp_path_factory, firmware_files) -> Path:
    """The unix tier's virtual flash with the firmware deployed."""
    return _golden(tmp_path_factory, "golden", VirtualToken, firmware_files, "flash.img")


TIERS = ("unix", "pico")
on_both_tiers = pytest.mark.parametrize("tier", TIERS, indirect=True)


def pico_missing() -> str | None:
    """Why the Pico tier cannot run here (None: it can)."""
    from keyfob.sim import pico

    try:
        pico.find_inputs()
        pico.check_runner()
    except SimError as exc:
        return str(exc)
    return None


def skip_without_pico() -> None:
    """The one skip of the Pico tier, with its one line (the first fixture of a test to need the
    tier asks: a test may list a Pico fixture before ``tier``)."""
    why = pico_missing()
    if why:
        pytest.skip(f"Pico tier skipped: {why}")


@pytest.fixture
def tier(request) -> str:
    """The tier a test runs on: 'unix' unless the module or test parametrizes it."""
    name = getattr(request, "param", "unix")
    if name == "pico":
        skip_without_pico()
    return name


@pytest.fixture(scope="session")
def pico_firmware_files(tmp_path_factory) -> list[tuple[Path, str]]:
    return build.build("rp2040", tmp_path_factory.mktemp("build-rp2040"))


@pytest.fixture(scope="session")
def pico_golden_flash(tmp_path_factory, pico_firmware_files) -> Path:
    """An emulated Pico's flash: the MicroPython UF2, then the firmware (boards/rp2040 as a user
    deploys it)."""
    from keyfob.sim.pico import PicoToken

    skip_without_pico()
    return _golden(tmp_path_factory, "golden-pico", PicoToken, pico_firmware_files, "flash.bin")


@pytest.fixture
def make_token(request, tier, tmp_path):
    """Factory: make_token(name='tok', **kw) -> the tier's token on a copy of its golden flash
    (not powered on yet). All are shut down at the end of the test."""
    made: list = []
    if tier == "pico":
        from keyfob.sim.pico import PicoToken

        image = request.getfixturevalue("pico_golden_flash")
        cls = PicoToken
    else:
        image = request.getfixturevalue("golden_flash")
        cls = VirtualToken

    def make(name: str = "tok", **kw):
        tok = cls(tmp_path / name, image=image, **kw)
        made.append(tok)
        return tok

    yield make
    for tok in made:
        tok.close()


# The longest tests (minutes each, most of them on the emulated Pico) start first, so that no worker
# begins one near the end while the other sits idle; `make test` runs with --dist worksteal, so an
# idle worker takes queued tests from the busy one.
_LONGEST_FIRST = (
    "test_lock_boot_flood.py::",
    "test_reset_power_cut.py::test_pico_",
    "test_reset_power_cut.py::test_power_cut_",
    "test_ctrl_c_flood.py::",
    "test_lock_security.py::test_locked_token_gives_a_usb_attacker_nothing",
    "test_web_browser.py::",  # under a minute, but a browser, a server and two tokens at once
)


def pytest_collection_modifyitems(config, items) -> None:
    def rank(item) -> int:
        for i, part in enumerate(_LONGEST_FIRST):
            if part in item.nodeid:
                return i
        return len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


# --- verifier databases -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def databases():
    """This process's source of fresh databases; its PostgreSQL server (if one was started) is
    stopped at the end of the session."""
    dbs = Databases(tag=os.environ.get("PYTEST_XDIST_WORKER", "main"))
    yield dbs
    dbs.close()


@pytest.fixture(scope="session", params=KINDS)
def db_kind(request) -> str:
    """The database engine a test runs on: each test that uses it runs once per engine."""
    return request.param


def pytest_runtest_setup(item):
    # Skipped here rather than in db_kind: pytest then reports every PostgreSQL case under this one
    # location, so -ra folds them into one line.
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("db_kind") == "postgresql" and postgresql_missing():
        pytest.skip(f"PostgreSQL cases skipped: {postgresql_missing()}")


@pytest.fixture
def make_db(databases, db_kind, tmp_path):
    """Factory: make_db(name='v') -> a fresh database of the test's engine (a SQLite path under
    tmp_path or a PostgreSQL URL), as ``Verifier.init`` and ``--db`` take it; dropped at the end."""
    made: list[str] = []

    def make(name: str = "v") -> str:
        made.append(databases.new(db_kind, tmp_path, name))
        return made[-1]

    yield make
    for target in made:
        databases.drop(target)


@pytest.fixture
def db(make_db) -> str:
    """One fresh database of the test's engine (see make_db)."""
    return make_db()
