"""The token inventory: seed files and records in, seeds out (export, twins), listings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from keyfob.records import TokenRecord
from keyfob.serials import is_valid_serial

from . import db, modes, rules
from .core import _audit, _serial, log
from .errors import AlreadyExists, BadInput, SeedFileError, TokenStateError, UnknownToken
from .results import TokenInfo

#: the owner of a token by serial, on the login path's plain SQL (:mod:`.sql`)
_OWNER_SQL = "SELECT u.name FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.serial = :serial"


class Imported(str):
    """The serial of a token just imported (a ``str``, so a list of them compares with serials),
    and ``disabled``: why it was imported disabled (outside the dates its file allows, RFC 6030
    section 5), or None."""

    disabled: str | None

    def __new__(cls, serial: str, disabled: str | None = None) -> Imported:
        self = super().__new__(cls, serial)
        self.disabled = disabled
        return self


def _outside_dates(record: TokenRecord, now: float) -> str | None:
    """Why ``record`` may not be used at ``now`` (its dates are inclusive), or None."""
    if record.valid_until is not None and now > record.valid_until:
        return "its ExpiryDate has passed"
    if record.valid_from is not None and now < record.valid_from:
        return "its StartDate is still to come"
    return None


#: what a seed file says when it does not know the manufacturer or model (kept as NULL)
_UNKNOWN = "unknown"


def _assumed_device(serial: str) -> dict[str, str]:
    """The manufacturer and model export writes when none is stored: keyfob's own for a keyfob
    serial, ``unknown`` for others."""
    if is_valid_serial(serial):
        return {"manufacturer": TokenRecord.manufacturer, "model": TokenRecord.model}
    return {"manufacturer": _UNKNOWN, "model": _UNKNOWN}


def _device_columns(serial: str, record: TokenRecord) -> dict[str, str]:
    """The manufacturer/model columns to store: only where they differ from what export would assume
    (NULL, the column left out, means "as assumed": so rows from before 0004 and new rows agree)."""
    assumed = _assumed_device(serial)
    return {name: getattr(record, name) for name in assumed if getattr(record, name) != assumed[name]}


def _device_fields(row) -> dict[str, str]:
    """Manufacturer and model for an exported token: as stored, else as assumed."""
    stored = {name: getattr(row, name) for name in ("manufacturer", "model")}
    return _assumed_device(row.serial) | {k: v for k, v in stored.items() if v is not None}


class Inventory:
    """Import, export and listing of tokens."""

    def import_records(
        self, records: Iterable[TokenRecord], *, actor: str = "admin", source: str | None = None
    ) -> list[Imported]:
        """Put tokens into the inventory (state ``unassigned``), all or nothing.

        Serials follow :func:`keyfob.serials.accept_serial`: keyfob serials need their check digit,
        other vendors' serials are kept as given. A serial already in the inventory refuses the whole batch.
        ``source`` (e.g. the file name) prefixes error messages.

        A token outside its file's dates now (``valid_from``/``valid_until``: before its StartDate or
        after its ExpiryDate) is imported ``disabled``, and its :class:`Imported` says why; an admin
        who knows better enables it. A TOTP token starts with the file's drift (RFC 6030 TimeDrift)."""
        from sqlalchemy import insert, select

        from .models import token_table as _T

        recs = list(records)
        serials = []
        for n, r in enumerate(recs, start=1):
            if not isinstance(r, TokenRecord):
                raise BadInput("import_records takes TokenRecord objects")
            try:
                serials.append(_serial(r.serial))
            except BadInput as exc:
                raise BadInput(f"{source or 'import'}: token {n}: {exc}") from None
        dup = {s for s, n in Counter(serials).items() if n > 1}
        if dup:
            raise BadInput(f"the seed file lists token {min(dup)} more than once")
        now = self._clock()
        disabled = [_outside_dates(r, now) for r in recs]

        def run(conn):
            have = conn.execute(select(_T.c.serial).where(_T.c.serial.in_(serials))).scalars().first()
            if have is not None:
                raise AlreadyExists(f"token {have} is already in the inventory; nothing imported")
            for s, r, why in zip(serials, recs, disabled, strict=True):
                conn.execute(
                    insert(_T),
                    _device_columns(s, r)
                    | {
                        "serial": s,
                        "mode": r.mode,
                        "algorithm": r.algorithm,
                        "digits": r.digits,
                        "period": r.period,
                        "seed": self._box.seal(r.secret, s),
                        "counter": r.counter,
                        "last_step": -1,
                        "drift": r.drift,
                        "fail_count": 0,
                        "locked_until": None,
                        "state": "unassigned" if why is None else "disabled",
                        "expires_at": r.valid_until,
                        "user_id": None,
                        "description": None,
                        "created": now,
                        "updated": now,
                    },
                )
                _audit(
                    conn,
                    now,
                    actor,
                    "token-import",
                    "ok",
                    serial=s,
                    detail=f"{r.mode} {r.algorithm} {r.digits} digits"
                    + ("" if why is None else f"; imported disabled: {why}"),
                )

        db.write(self._engine, run)
        return [Imported(s, why) for s, why in zip(serials, disabled, strict=True)]

    def import_seed_file(
        self,
        path,
        *,
        key: bytes | str | None = None,
        passphrase: str | None = None,
        psk_file=None,
        actor: str = "admin",
    ) -> list[Imported]:
        """Import a seed file, all or nothing: PSKC (RFC 6030; plain, pre-shared key or passphrase),
        OATH CSV or otpauth URIs, told apart by content (``keyfob.formats.read_seed_file``).
        ``psk_file``: the key file to try when a PSKC file needs a pre-shared key none was given."""
        try:
            from keyfob.formats import FormatError, read_seed_file
        except ImportError:
            raise SeedFileError("reading seed files needs keyfob.formats, which is missing") from None
        try:
            records = read_seed_file(path, key=key, passphrase=passphrase, psk_file=psk_file)
        except FormatError as exc:
            raise SeedFileError(str(exc)) from None
        except OSError as exc:
            raise SeedFileError(f"cannot read seed file {path}: {exc.strerror}") from None
        if not records:
            raise SeedFileError(f"seed file {path} holds no tokens")
        return self.import_records(records, actor=actor, source=str(path))

    def import_uri(self, uri: str, *, actor: str = "admin") -> list[Imported]:
        """Import the token of one otpauth:// URI (Key URI format); its account name is the serial."""
        from keyfob.formats import FormatError, parse_uri

        try:
            record = parse_uri(uri)
        except FormatError as exc:
            raise SeedFileError(f"otpauth URI: {exc}") from None
        return self.import_records([record], actor=actor, source="otpauth URI")

    #: states whose seeds may leave the database: a lost or revoked token must not come back to life
    EXPORTABLE = ("unassigned", "active", "disabled")
    _EXPORT_ACTIONS = ("token-export", "token-twin")

    def export_records(
        self,
        serials: Iterable[str] | None = None,
        *,
        actor: str = "admin",
        action: str = "token-export",
        detail: str | None = None,
        render: Callable[[list[TokenRecord]], object] | None = None,
    ):
        """The tokens' seeds and state as TokenRecords (HOTP: the next counter the verifier expects;
        TOTP: the period), for a seed file or a software twin.

        ``serials=None`` means every token that is unassigned, active or disabled; naming a lost or
        revoked token is refused. ``render(records)``, if given, turns the records into what the
        caller needs (file bytes, a URI); it runs before anything is written, so a render error
        leaves no trace. Then one audit row per token (``action``: ``token-export`` or
        ``token-twin``; ``detail`` says how, never a seed) is committed, and only then is the result
        returned. Returns ``render(records)`` or the records.
        """
        from sqlalchemy import select

        from .models import token_table as _T
        from .models import user_table as _U

        if action not in self._EXPORT_ACTIONS:
            raise BadInput(f"action must be one of {self._EXPORT_ACTIONS}")
        wanted = None if serials is None else [_serial(s) for s in serials]
        if wanted is not None and not wanted:
            raise BadInput("name at least one token (or none for all)")
        q = select(_T, _U.c.name.label("user_name")).select_from(_T.outerjoin(_U, _T.c.user_id == _U.c.id))
        if wanted is None:
            q = q.where(_T.c.state.in_(self.EXPORTABLE))
        else:
            q = q.where(_T.c.serial.in_(wanted))
        with db.read(self._engine) as conn:
            found = {r.serial: r for r in conn.execute(q.order_by(_T.c.serial)).all()}
        if wanted is None:
            rows = list(found.values())
            if not rows:
                raise TokenStateError("the inventory holds no token whose seed can be exported")
        else:
            rows = []
            for s in dict.fromkeys(wanted):
                tok = found.get(s)
                if tok is None:
                    raise UnknownToken(s)
                if tok.state not in self.EXPORTABLE:
                    raise TokenStateError(f"token {s} is {tok.state}; its seed is not handed out")
                rows.append(tok)
        records = [
            TokenRecord(
                serial=t.serial,
                mode=t.mode,
                algorithm=t.algorithm,
                digits=t.digits,
                secret=self._box.open(bytes(t.seed), t.serial),
                counter=modes.of(t).exported_counter(t),
                period=t.period,
                drift=t.drift if t.mode == "totp" else 0,
                valid_until=t.expires_at,
                **_device_fields(t),
            )
            for t in rows
        ]
        result = records if render is None else render(records)
        now = self._clock()

        def run(conn):
            for t in rows:
                _audit(conn, now, actor, action, "ok", t.user_name, t.serial, detail)

        db.write(self._engine, run)
        log.info("%s: %d token(s) by %s", action, len(rows), actor)
        return result

    def list_tokens(self, *, user: str | None = None, state: str | None = None) -> list[TokenInfo]:
        from sqlalchemy import select

        from .models import token_table as _T
        from .models import user_table as _U

        now = self._clock()
        q = select(_T, _U.c.name.label("user_name")).select_from(_T.outerjoin(_U, _T.c.user_id == _U.c.id))
        if user is not None:
            q = q.where(_U.c.name == user)
        if state is not None:
            q = q.where(_T.c.state == state)
        with db.read(self._engine) as conn:
            if user is not None:
                self._user(conn, user)
            rows = conn.execute(q.order_by(_T.c.serial)).all()
        return [self._info(r, r.user_name, now) for r in rows]

    def token_owner(self, serial: str) -> str | None:
        """The name of the user token ``serial`` is linked to, whatever its state; None for an
        unknown or unlinked token (:class:`BadInput` for a malformed serial). One plain read on
        the login path's connections, for a login named by its token: under WAL it waits for no
        writer, so the HTTP front calls it on its event loop."""
        serial = _serial(serial)
        with self._db.read() as conn:
            return conn.execute(_OWNER_SQL, {"serial": serial}).scalar()

    def token(self, serial: str) -> TokenInfo:
        from sqlalchemy import select

        from .models import user_table as _U

        serial = _serial(serial)
        with db.read(self._engine) as conn:
            tok = self._token(conn, serial)
            name = None
            if tok.user_id is not None:
                name = conn.execute(select(_U.c.name).where(_U.c.id == tok.user_id)).scalar()
        return self._info(tok, name, self._clock())

    def _info(self, t, user_name, now) -> TokenInfo:
        return TokenInfo(
            t.serial,
            t.mode,
            t.algorithm,
            t.digits,
            t.period,
            t.state,
            user_name,
            t.description,
            t.counter,
            t.last_step,
            t.drift,
            t.fail_count,
            rules.is_locked(t.fail_count, t.locked_until, now, self.policy),
            t.locked_until,
        )
