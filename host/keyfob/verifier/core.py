"""The verifier's shared state and the few helpers every concern uses: the name and serial rules,
the audit row, and :class:`VerifierCore` (engine, seed box, policy, clock, key cache, lookups).

SQLAlchemy and the tables of :mod:`.models` (by their short names: ``_T`` tokens, ``_U`` users,
``_B`` backup codes, ``_A`` audit, ``_S`` settings, ``_TH`` throttle) are imported inside the admin
functions that use them, here and in every concern, never at module level: opening a SQLite file
and checking a login run on the stdlib's ``sqlite3`` (:mod:`.sql`) and import neither (``import
sqlalchemy`` alone takes longer than a ``keyfob validate`` may; tests/test_cli_start.py)."""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Callable
from typing import Self

from keyfob.otp import HotpKey
from keyfob.serials import SerialError, accept_serial

from . import db, sql
from .crypto import SeedBox
from .errors import BadInput, UnknownToken, UnknownUser
from .passwords import Passwords
from .rules import Policy


class _Log:
    """The verifier's logger (``keyfob.verifier``), used only once the process has imported logging:
    before that, no handler can have been set up to take a record, and importing logging costs a
    ``keyfob validate`` more than its check."""

    __slots__ = ()

    def info(self, msg: str, *args) -> None:
        if "logging" in sys.modules:
            sys.modules["logging"].getLogger("keyfob.verifier").info(msg, *args)

    def error(self, msg: str, *args) -> None:
        if "logging" in sys.modules:
            sys.modules["logging"].getLogger("keyfob.verifier").error(msg, *args)


log = _Log()

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}\Z")
_CAS_TRIES = 8


# --- helpers --------------------------------------------------------------------------------------


def _check_name(name: str) -> str:
    if not isinstance(name, str) or _NAME_RE.match(name) is None:
        raise BadInput("a user name has 1-64 characters: letters, digits and . _ @ + - (not first)")
    return name


#: the user-name rule, for fronts that refuse a malformed name before anything is looked up
check_name = _check_name


def _serial(text: str) -> str:
    """:func:`keyfob.serials.accept_serial` with the verifier's :class:`BadInput`: keyfob serials
    must pass their Damm check digit, other vendors' serials are kept as given (1 to 64 printable
    characters, no whitespace)."""
    try:
        return accept_serial(text)
    except SerialError as exc:
        raise BadInput(str(exc)) from None


# The hot path (load, compare-and-set, audit) uses plain portable SQL through :mod:`.sql`:
# SQLAlchemy's execution path costs more per login than the database work itself.
_AUDIT_SQL = (
    "INSERT INTO audit (ts, actor, action, user_name, serial, result, detail, count, source, via)"
    " VALUES (:ts, :actor, :action, :user_name, :serial, :result, :detail, 1, :source, :via)"
)


def _utf8(*values) -> None:
    """:class:`BadInput` if a text holds what is not UTF-8 (bytes the command line could not decode
    come in as lone surrogates). The message repeats nothing typed."""
    for val in values:
        if isinstance(val, str):
            try:
                val.encode("utf-8")
            except UnicodeEncodeError:
                raise BadInput("the user name, password or code is not valid UTF-8; nothing was checked") from None


def _end_web_sessions(conn, which) -> int:
    """End every web session of the users ``which`` selects (a clause on the users table): their
    session generation moves on, so every cookie made before is refused. The one place that does it
    (a sign-out, the help-desk flag taken, a new password, a token marked lost). Returns the rows."""
    from sqlalchemy import update

    from .models import user_table as _U

    return conn.execute(update(_U).where(which).values(web_generation=_U.c.web_generation + 1)).rowcount


def _audit(conn, now, actor, action, result, user_name=None, serial=None, detail=None, source=None, via=None) -> None:
    sql.of(conn).execute(
        _AUDIT_SQL,
        {
            "ts": now,
            "actor": actor,
            "action": action,
            "user_name": user_name,
            "serial": serial,
            "result": result,
            "detail": detail,
            "source": source,
            "via": via,
        },
    )


class VerifierCore:
    """The state every concern of :class:`~keyfob.verifier.Verifier` shares."""

    def __init__(self, store, box: SeedBox, policy: Policy, clock: Callable[[], float]):
        self._db = store  # the login path's connections (:mod:`.sql`)
        self._box = box
        self.policy = policy
        self._clock = clock
        self._pw = Passwords(policy.password_profile)
        self._keys: dict[int, tuple[bytes, HotpKey]] = {}
        self._keys_lock = threading.Lock()
        self._hints: dict = {}  # user name -> where its token last went here (Logins._warm)
        self._pruned = float("-inf")  # when this process last applied the audit retention
        #: test seam: called when a login is about to open the write transaction that decides it
        #: (check_code: its one transaction; verify: the one after the password), see the race test
        self._before_write: Callable[[], None] | None = None

    @property
    def store(self):
        """The login path's store (:mod:`.sql`): a front that runs a login's steps itself
        (:mod:`.steps`) writes through it."""
        return self._db

    @property
    def passwords(self):
        """The password hasher (:class:`.passwords.Passwords`): such a front verifies through it."""
        return self._pw

    @property
    def _engine(self):
        """The SQLAlchemy engine of the admin operations (made on first use for a SQLite file)."""
        return self._db.engine()

    def __repr__(self) -> str:
        return f"Verifier({db.display(self._db.url)})"

    def close(self) -> None:
        self._keys.clear()
        self._hints.clear()
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- lookups ---------------------------------------------------------------------------------------

    def _user(self, conn, name: str):
        from sqlalchemy import select

        from .models import user_table as _U

        row = conn.execute(select(_U).where(_U.c.name == name)).first()
        if row is None:
            raise UnknownUser(name)
        return row

    def _token(self, conn, serial: str):
        from sqlalchemy import select

        from .models import token_table as _T

        row = conn.execute(select(_T).where(_T.c.serial == serial)).first()
        if row is None:
            raise UnknownToken(serial)
        return row

    def _key(self, tok) -> HotpKey:
        """The token's HotpKey, cached per token id while its sealed seed is unchanged."""
        hit = self._keys.get(tok.id)
        if hit is not None and hit[0] == tok.seed:
            return hit[1]
        seed = self._box.open(tok.seed, tok.serial)
        key = HotpKey(seed, digits=tok.digits, algorithm=tok.algorithm)
        with self._keys_lock:
            self._keys[tok.id] = (tok.seed, key)
        return key
