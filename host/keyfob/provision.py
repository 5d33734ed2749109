"""Provisioning from the host: turn bare keyfob tokens into issued ones, and keep their seeds.

One token (:func:`provision_token`), over the USB protocol of docs/protocol.md:

    INFO (refuse a provisioned token) -> PROVISION (seed, serial, settings) -> key check value
    compared in constant time -> SETTIME (UTC) -> LOCK -> INFO (everything as asked?)

A batch (:func:`provision_batch`) gives each token a fresh record (:func:`new_record`: a seed from
:mod:`secrets`, 20 bytes for HMAC-SHA1 as RFC 4226 section 4 recommends, 32 for HMAC-SHA256 as in
RFC 6238 appendix B) and a serial from :class:`OutputDir`, then writes one seed file (PSKC, RFC 6030,
encrypted with a pre-shared AES key or a passphrase; in the clear only when asked) and one manifest
(JSON and CSV: serial, port, board, settings, key check value, time; never a seed).

What happens to a batch where token 3 of 5 fails: tokens 1 and 2 are provisioned and locked, and
their seeds exist nowhere else, so throwing them away would turn two good tokens into bricks until a
factory reset (button held). So the seed file and the manifest are rewritten after *every* token that
succeeds, each time atomically (temp file + fsync + rename, mode 0600): an interruption at any point
(a failing token, a pulled cable, Ctrl-C, a crash) leaves the seeds of every finished token on disk
and never a half-written file. Only tokens that completed every step (PROVISION with a matching key
check value, SETTIME, LOCK when asked, the final INFO check) go into the seed file: a token that
failed half-way is listed under ``failed`` in the manifest, with whether its seed is on it, and must
be factory-reset before it is provisioned again. The batch goes on with the next token (unless
``stop_on_error``) and :class:`BatchResult` says what failed; the command line exits non-zero.
Serials are taken from the ledger before the first token is touched; a failed token's serial is
never handed out again from that directory.

Nothing here prints; errors carry one line for people and never a seed (nor a pre-shared key or a
passphrase).
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from keyfob import errors
from keyfob.device.client import DeviceError, KcvMismatch, Refused, TimeSync, TokenClient, TokenInfo
from keyfob.errors import BadInput, KeyfobError
from keyfob.formats import FormatError, write_pskc
from keyfob.formats._common import read_key_file, write_private
from keyfob.params import DEFAULT_ALGORITHM, DEFAULT_DIGITS, DEFAULT_PERIOD, KEYFOB, SEED_LENGTHS
from keyfob.records import RecordError, TokenRecord
from keyfob.serials import BODY_DIGITS, PREFIX, SerialError, make_serial, normalize_serial

try:  # POSIX: serialise serial allocation between processes sharing an output directory
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LEDGER = "serials.txt"
_LOCK = ".serials.lock"
MANIFEST_FORMAT = "keyfob-manifest/1"
MANIFEST_SUFFIX = ".manifest.json"
#: names the pre-shared key file for seed files when --key-file is not given
KEY_FILE_ENV = "KEYFOB_TRANSPORT_KEY_FILE"
CSV_FIELDS = (
    "serial",
    "port",
    "board",
    "firmware",
    "mode",
    "algorithm",
    "digits",
    "period",
    "counter",
    "kcv",
    "time",
    "clock_offset",
    "locked",
)
AES_KEY_BYTES = 16  # AES-128, the pre-shared key created for a new key file

#: progress(index, total, port, stage): index of the token (0-based) and what is happening to it.
Progress = Callable[[int, int, str, str], None]


# --------------------------------------------------------------------------- errors


class ProvisionError(KeyfobError):
    """Provisioning failed; the message is one line for people and never holds a secret."""


class OutputError(ProvisionError, BadInput):
    """The output directory, the ledger, a key file or a seed file cannot be used as asked."""


class SerialInUse(ProvisionError, errors.Refused):
    """A serial given by hand was already used in this output directory."""


class TokenFailed(ProvisionError):
    """One token could not be provisioned.

    ``stage``: where it stopped (``info``, ``provision``, ``settime``, ``lock``, ``check``).
    ``seed_on_token``: True when the token holds this record's seed (it must be factory-reset before
    it can be provisioned again), False when it was left as it was, None when that is unknown.
    """

    def __init__(self, message: str, stage: str, seed_on_token: bool | None = False):
        super().__init__(message)
        self.stage = stage
        self.seed_on_token = seed_on_token


class AlreadyProvisioned(TokenFailed, errors.Refused):
    """The token already holds a seed: it must be factory-reset first. Nothing was changed."""


class TokenRefused(TokenFailed, errors.Refused):
    """The token refused a request (docs/protocol.md section 4), e.g. time mode without a DS3231."""


# --------------------------------------------------------------------------- records


def new_record(
    serial: str,
    mode: str = "hotp",
    algorithm: str = DEFAULT_ALGORITHM,
    digits: int = DEFAULT_DIGITS,
    period: int = DEFAULT_PERIOD,
    counter: int = 0,
) -> TokenRecord:
    """A fresh token record with a seed from :mod:`secrets` (the OS CSPRNG).

    The seed is as long as the hash output: 20 bytes for SHA-1 (RFC 4226 section 4, R6, recommends
    160 bits), 32 for SHA-256 (RFC 6238 appendix B).
    """
    try:
        serial = normalize_serial(serial)
    except SerialError as exc:
        raise ProvisionError(str(exc)) from None
    if algorithm not in KEYFOB.algorithms:
        raise ProvisionError(f"algorithm must be one of {', '.join(KEYFOB.algorithms)}")
    try:
        return TokenRecord(
            serial=serial,
            mode=mode,
            algorithm=algorithm,
            digits=digits,
            secret=secrets.token_bytes(SEED_LENGTHS[algorithm]),
            counter=counter,
            period=period,
        )
    except RecordError as exc:
        raise ProvisionError(str(exc)) from None


# --------------------------------------------------------------------------- how seed files are protected


@dataclass(frozen=True)
class Protection:
    """How the seed file is written: ``key`` (pre-shared AES key, RFC 6030 section 6.1),
    ``passphrase`` (PBKDF2, section 6.2) or ``plain`` (only when asked for)."""

    kind: str
    key: bytes | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)
    key_file: Path | None = None
    key_file_created: bool = False

    @classmethod
    def from_key_file(cls, path: str | os.PathLike[str], create: bool = True) -> Protection:
        key, created = load_key_file(path, create=create)
        # absolute, so the manifest still names it for an import run from another folder
        return cls("key", key=key, key_file=Path(path).absolute(), key_file_created=created)

    @classmethod
    def from_passphrase(cls, passphrase: str) -> Protection:
        if not passphrase:
            raise OutputError("the passphrase is empty")
        return cls("passphrase", passphrase=passphrase)

    @classmethod
    def plain(cls) -> Protection:
        return cls("plain")

    def pskc_args(self) -> dict:
        if self.kind == "key":
            return {"key": self.key}
        if self.kind == "passphrase":
            return {"passphrase": self.passphrase}
        return {"plain": True}

    def describe(self) -> str:
        if self.kind == "key":
            return f"key file {self.key_file}"
        if self.kind == "passphrase":
            return "passphrase"
        return "plain (seeds in the clear)"


def default_key_file() -> Path:
    """Where provisioning keeps its pre-shared key: ``$KEYFOB_TRANSPORT_KEY_FILE``, else
    ``$XDG_CONFIG_HOME/keyfob/transport.key`` (``~/.config`` when XDG_CONFIG_HOME is not set)."""
    env = os.environ.get(KEY_FILE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "keyfob" / "transport.key"


def key_file_for(seed_file: str | os.PathLike[str]) -> Path:
    """The key file that protects a seed file provisioning wrote: the one named by the manifest
    next to it (``<stem>.manifest.json``), else :func:`default_key_file`. Nothing is read but the
    manifest; a manifest that is missing, unreadable or says another protection changes nothing."""
    seed = Path(seed_file)
    try:
        doc = json.loads(seed.with_name(seed.stem + MANIFEST_SUFFIX).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        doc = None
    if isinstance(doc, dict) and doc.get("protection") == "key" and isinstance(doc.get("key_file"), str):
        return Path(doc["key_file"])
    return default_key_file()


def load_key_file(path: str | os.PathLike[str], create: bool = True) -> tuple[bytes, bool]:
    """The pre-shared AES key in ``path`` (hex text), and whether it was created just now.

    A missing file is created (when ``create``) with a new random AES-128 key, mode 0600, never
    replacing an existing file (O_EXCL). An existing file is read by
    :func:`keyfob.formats._common.read_key_file`: a regular file that only its owner can read,
    holding 16, 24 or 32 bytes in hex.
    """
    p = Path(path)
    if not p.exists() and create:
        try:
            p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # someone else made it a moment ago: read theirs
        except OSError as exc:
            raise OutputError(f"cannot create the key file {p}: {exc.strerror or exc}") from None
        else:
            key = secrets.token_bytes(AES_KEY_BYTES)
            with os.fdopen(fd, "w") as fh:
                fh.write(key.hex() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            return key, True
    try:
        return read_key_file(p), False
    except FormatError as exc:
        raise OutputError(str(exc)) from None


# --------------------------------------------------------------------------- one token


@dataclass(frozen=True)
class Provisioned:
    """A token that completed every step. ``record`` holds the seed (its repr does not show it)."""

    record: TokenRecord
    port: str
    kcv: str
    time: int
    sync: TimeSync
    info: TokenInfo

    def manifest_row(self) -> dict:
        r = self.record
        return {
            "serial": r.serial,
            "port": self.port,
            "board": self.info.board,
            "firmware": self.info.firmware,
            "mode": r.mode,
            "algorithm": r.algorithm,
            "digits": r.digits,
            "period": r.period,
            "counter": r.counter,
            "kcv": self.kcv,
            "time": _iso(self.time),
            "clock_offset": self.sync.offset,
            "locked": self.info.locked,
        }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seed_state(client: TokenClient, record: TokenRecord) -> bool | None:
    """After a failure past PROVISION: does the token now hold this record? (None: cannot tell)."""
    try:
        info = client.info()
    except DeviceError:
        return None
    return bool(info.provisioned and info.serial == record.serial)


def provision_token(
    client: TokenClient,
    record: TokenRecord,
    lock: bool = True,
    now: float | None = None,
    port: str = "",
    progress: Callable[[str], None] | None = None,
) -> Provisioned:
    """INFO -> PROVISION -> key check value -> SETTIME -> LOCK -> INFO check, on one token.

    ``now`` is the UTC Unix time to set (default: this computer's clock). Raises
    :class:`AlreadyProvisioned` (nothing changed) or :class:`TokenFailed`.
    """
    where = port or "the token"
    say = progress or (lambda stage: None)
    stage = "info"
    try:
        say(stage)
        before = client.info()
        if before.provisioned:
            raise AlreadyProvisioned(
                f"{where} is already provisioned (serial {before.serial or '?'}"
                f"{', locked' if before.locked else ''}): factory-reset it first (keyfob reset, "
                "holding its button); nothing was changed",
                stage,
                seed_on_token=False,
            )
        stage = "provision"
        say(stage)
        kcv = client.provision(record)  # checks the key check value (constant time): KcvMismatch
        stage = "settime"
        say(stage)
        t = round(time.time() if now is None else now)
        sync = client.settime(t)
        if lock:
            stage = "lock"
            say(stage)
            client.lock()
        stage = "check"
        say(stage)
        after = client.info()
    except TokenFailed:
        raise
    except KcvMismatch:
        raise TokenFailed(
            f"{where}: the key check value does not match: the seed did not land intact; "
            "factory-reset the token and provision it again",
            stage,
            seed_on_token=True,
        ) from None
    except Refused as exc:
        landed = False if stage == "provision" else _seed_state(client, record)
        raise TokenRefused(f"{where}: {exc}", stage, landed) from None
    except DeviceError as exc:
        landed = _seed_state(client, record) if stage != "info" else False
        raise TokenFailed(f"{where}: {exc}", stage, landed) from None
    except OSError as exc:
        raise TokenFailed(f"{where}: {exc.strerror or exc}", stage, None) from None
    wrong = []
    if not after.provisioned:
        wrong.append("not provisioned")
    if after.serial != record.serial:
        wrong.append("serial")
    for name in ("mode", "algorithm", "digits", "counter"):
        if getattr(after, name) != getattr(record, name):
            wrong.append(name)
    if after.period != record.period:
        wrong.append("period")
    if after.locked != lock:
        wrong.append("lock state")
    if wrong:
        raise TokenFailed(
            f"{where}: INFO after provisioning does not match what was sent ({', '.join(wrong)})",
            "check",
            seed_on_token=_seed_state(client, record),
        )
    return Provisioned(record=record, port=port, kcv=kcv, time=t, sync=sync, info=after)


# --------------------------------------------------------------------------- the output directory


def _serial_number(serial: str) -> int | None:
    """The sequence number of a keyfob serial (``KF`` + 8 digits + check), or None."""
    try:
        s = normalize_serial(serial)
    except SerialError:
        return None
    return int(s[len(PREFIX) : len(PREFIX) + BODY_DIGITS])


class OutputDir:
    """Where a batch's seed file and manifest go, with the ledger of serials handed out there.

    The ledger (``serials.txt``) gets one line per serial *before* the serial is written to any
    token, under an exclusive lock, so two runs on the same directory never hand out the same
    serial, and a serial whose token failed is never handed out again. Every serial named in a
    manifest of the directory counts as used too (in case the ledger was lost).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def ensure(self) -> None:
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {self.path}: {exc.strerror or exc}") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write into {self.path}")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.ensure()
        fd = os.open(self.path / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def used_serials(self) -> set[str]:
        used: set[str] = set()
        ledger = self.path / LEDGER
        try:
            text = ledger.read_text("utf-8")
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            raise OutputError(f"cannot read {ledger}: {exc.strerror or exc}") from None
        for line in text.splitlines():
            word = line.split("#", 1)[0].strip().split()
            if word:
                used.add(word[0])
        for manifest in self.path.glob("*" + MANIFEST_SUFFIX):
            try:
                data = json.loads(manifest.read_text("utf-8"))
                for item in data.get("tokens", []) + data.get("failed", []):
                    used.add(str(item["serial"]))
            except (OSError, ValueError, TypeError, KeyError, AttributeError):
                raise OutputError(f"{manifest} is not a readable keyfob manifest") from None
        return used

    def allocate(self, count: int, first: str | None = None) -> list[str]:
        """``count`` consecutive serials, recorded in the ledger before they are returned.

        ``first`` (typed by a person: validated with its check digit) starts the run; otherwise the
        run starts after the highest keyfob serial used in this directory (sequence number 1 in an
        empty one).
        """
        if count < 1:
            raise OutputError("nothing to provision (count must be at least 1)")
        with self._locked():
            used = self.used_serials()
            if first is not None:
                try:
                    start = _serial_number(normalize_serial(first))
                except SerialError as exc:
                    raise OutputError(f"--serial: {exc}") from None
            else:
                numbers = [n for n in (_serial_number(s) for s in used) if n is not None]
                start = max(numbers, default=0) + 1
            assert start is not None
            if start + count - 1 >= 10**BODY_DIGITS:
                raise OutputError("no serial numbers left after that one")
            serials = [make_serial(start + i) for i in range(count)]
            taken = [s for s in serials if s in used]
            if taken:
                raise SerialInUse(
                    f"serial {taken[0]} was already used in {self.path}"
                    + (f" ({len(taken)} of the {count} asked for are)" if len(taken) > 1 else "")
                    + ": serials are never reused"
                )
            stamp = _iso(time.time())
            lines = "".join(f"{s} {stamp}\n" for s in serials)
            try:
                with open(self.path / LEDGER, "a", encoding="utf-8") as fh:
                    fh.write(lines)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise OutputError(f"cannot write {self.path / LEDGER}: {exc.strerror or exc}") from None
            return serials


@dataclass
class BatchResult:
    """What a batch did. ``seed_file`` is None when no token succeeded (nothing to save)."""

    done: list[Provisioned]
    failed: list[tuple[str, str, TokenFailed]]  # (port, serial, error)
    seed_file: Path | None
    manifest: Path
    manifest_csv: Path
    protection: Protection
    not_attempted: list[tuple[str, str]] = field(default_factory=list)  # (port, serial)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.not_attempted

    @property
    def records(self) -> list[TokenRecord]:
        return [p.record for p in self.done]


class _Writer:
    """Rewrites the batch's seed file and manifests, atomically, after each token."""

    def __init__(self, out: OutputDir, stem: str, protection: Protection, settings: dict):
        self.out = out
        self.seed_file = out.path / f"{stem}.pskc"
        self.manifest = out.path / f"{stem}{MANIFEST_SUFFIX}"
        self.manifest_csv = out.path / f"{stem}.manifest.csv"
        self.protection = protection
        self.settings = settings
        self.created = _iso(time.time())

    def save(self, done: list[Provisioned], failed: list[tuple[str, str, TokenFailed]]) -> None:
        try:
            if done:
                write_pskc(self.seed_file, [p.record for p in done], **self.protection.pskc_args())
            doc = {
                "format": MANIFEST_FORMAT,
                "created": self.created,
                "updated": _iso(time.time()),
                "seed_file": self.seed_file.name if done else None,
                "protection": self.protection.kind,
                "key_file": str(self.protection.key_file) if self.protection.key_file else None,
                "settings": self.settings,
                "tokens": [p.manifest_row() for p in done],
                "failed": [
                    {
                        "serial": serial,
                        "port": port,
                        "stage": err.stage,
                        "error": str(err),
                        "seed_on_token": err.seed_on_token,
                    }
                    for port, serial, err in failed
                ],
            }
            write_private(self.manifest, (json.dumps(doc, indent=2) + "\n").encode())
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
            w.writeheader()
            for p in done:
                w.writerow(p.manifest_row())
            write_private(self.manifest_csv, buf.getvalue().encode())
        except FormatError as exc:
            raise OutputError(str(exc)) from None


def _label(target, i: int) -> str:
    if isinstance(target, str):
        return target
    port = getattr(target, "port", None)
    return port if isinstance(port, str) else f"token #{i + 1}"


@contextmanager
def _client_for(target, timeout: float | None) -> Iterator[TokenClient]:
    if isinstance(target, TokenClient):
        yield target
        return
    port = target if isinstance(target, str) else getattr(target, "port", None)
    if not isinstance(port, str):
        raise TypeError("a batch target is a port name, a keyfob.device Device or a TokenClient")
    kwargs = {} if timeout is None else {"timeout": timeout}
    with TokenClient(port, **kwargs) as client:
        yield client


def provision_batch(
    targets: Sequence,
    out_dir: str | os.PathLike[str] | OutputDir,
    protection: Protection,
    *,
    mode: str = "hotp",
    algorithm: str = DEFAULT_ALGORITHM,
    digits: int = DEFAULT_DIGITS,
    period: int = DEFAULT_PERIOD,
    serial: str | None = None,
    serials: Sequence[str] | None = None,
    lock: bool = True,
    now: float | None = None,
    progress: Progress | None = None,
    stop_on_error: bool = False,
    timeout: float | None = None,
) -> BatchResult:
    """Provision every target (port names, ``keyfob.device.ports.Device`` objects or open
    :class:`TokenClient` objects) one after the other, saving after each success (see the module
    docstring for why). Serials: ``serials`` already allocated by :meth:`OutputDir.allocate`, or
    allocated here (consecutive, from ``serial`` when given)."""
    if not targets:
        raise ProvisionError("no tokens to provision")
    out = out_dir if isinstance(out_dir, OutputDir) else OutputDir(out_dir)
    # Check the settings once, before a serial is spent (new_record raises on a bad one).
    new_record(make_serial(1), mode, algorithm, digits, period)
    if serials is None:
        serials = out.allocate(len(targets), first=serial)
    elif len(serials) != len(targets):
        raise ProvisionError("one serial per token is needed")
    settings = {"mode": mode, "algorithm": algorithm, "digits": digits, "period": period, "lock": lock}
    stem = "keyfob-%s-%s" % (datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"), serials[0])
    writer = _Writer(out, stem, protection, settings)
    say = progress or (lambda i, n, port, stage: None)
    done: list[Provisioned] = []
    failed: list[tuple[str, str, TokenFailed]] = []
    skipped: list[tuple[str, str]] = []
    total = len(targets)
    for i, (target, sn) in enumerate(zip(targets, serials, strict=True)):
        port = _label(target, i)
        if failed and stop_on_error:
            skipped.append((port, sn))
            continue
        record = new_record(sn, mode, algorithm, digits, period)
        try:
            with _client_for(target, timeout) as client:
                result = provision_token(
                    client,
                    record,
                    lock=lock,
                    now=now,
                    port=port,
                    progress=lambda stage, i=i, port=port: say(i, total, port, stage),
                )
        except TokenFailed as exc:
            failed.append((port, sn, exc))
            say(i, total, port, "failed")
            writer.save(done, failed)
            continue
        except OSError as exc:  # the port could not even be opened
            failed.append((port, sn, TokenFailed(f"{port}: cannot open: {exc.strerror or exc}", "info")))
            say(i, total, port, "failed")
            writer.save(done, failed)
            continue
        done.append(result)
        # Saved before the next token is touched: this token is locked, its seed exists only here.
        writer.save(done, failed)
        say(i, total, port, "saved")
    return BatchResult(
        done=done,
        failed=failed,
        seed_file=writer.seed_file if done else None,
        manifest=writer.manifest,
        manifest_csv=writer.manifest_csv,
        protection=protection,
        not_attempted=skipped,
    )


def ready_tokens(ports: Sequence[str], timeout: float = 1.5) -> tuple[list[str], list[tuple[str, str]]]:
    """Split connected ports into tokens ready to provision and ``(port, why)`` skipped ones.

    For "provision every connected token": a port that does not answer INFO (a bare board, another
    device) or a token that is already provisioned is skipped rather than spending a serial on it.
    The ports are asked in parallel.
    """
    from concurrent.futures import ThreadPoolExecutor

    def ask(port: str) -> str | None:
        try:
            with TokenClient(port, timeout=timeout) as client:
                info = client.info()
        except DeviceError:
            return "does not answer as a keyfob token (deploy the firmware first)"
        except OSError as exc:
            return f"cannot open: {exc.strerror or exc}"
        if info.provisioned:
            return f"already provisioned as {info.serial}" + (" (locked)" if info.locked else "")
        return None

    if not ports:
        return [], []
    with ThreadPoolExecutor(max_workers=min(8, len(ports))) as pool:
        answers = list(pool.map(ask, ports))
    ready = [p for p, why in zip(ports, answers, strict=True) if why is None]
    skipped = [(p, why) for p, why in zip(ports, answers, strict=True) if why is not None]
    return ready, skipped


# --------------------------------------------------------------------------- virtual tokens


def start_virtual_tokens(
    folder: str | os.PathLike[str],
    names: Sequence[str],
    progress: Callable[[int, int], None] | None = None,
    workers: int = 4,
) -> list:
    """Start one virtual token per name in ``folder/<name>/`` (blank flash), deploy the sim
    firmware onto each with :func:`keyfob.deploy.deploy` (built once, deployed in parallel) and
    return the running :class:`keyfob.sim.VirtualToken` objects (close them when done; their
    flash images stay). On any failure every token started here is closed again."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from keyfob import build as fwbuild
    from keyfob import deploy as fwdeploy
    from keyfob.sim import VirtualToken

    base = Path(folder)
    for name in names:
        if (base / name / "flash.img").exists():
            raise OutputError(f"{base / name} already holds a virtual token")
    say = progress or (lambda done, total: None)
    try:  # the flash images hold the seeds, as a board's flash does: owner only
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {base}: {exc.strerror or exc}") from None
    tokens: list = []
    try:
        with tempfile.TemporaryDirectory(prefix="keyfob-build-") as tmp:
            try:
                files = fwbuild.build("sim", Path(tmp))
            except fwbuild.BuildError as exc:
                raise OutputError(f"firmware build failed: {exc}") from None
            for name in names:
                tokens.append(VirtualToken(base / name))
            finished = 0
            say(0, len(tokens))

            def bring_up(tok) -> None:
                tok.power_on()
                fwdeploy.deploy(tok.port, "sim", files=files)
                tok.wait_idle()

            with ThreadPoolExecutor(max_workers=max(1, min(workers, len(tokens)))) as pool:
                for fut in [pool.submit(bring_up, tok) for tok in tokens]:
                    fut.result()
                    finished += 1
                    say(finished, len(tokens))
    except BaseException:
        for tok in tokens:
            try:
                tok.close()
            except Exception:  # noqa: BLE001 - closing the rest matters more
                pass
        raise
    return tokens
