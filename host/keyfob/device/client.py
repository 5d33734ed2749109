"""Commands to a keyfob token over the provisioning protocol (docs/protocol.md).

:class:`TokenClient` sends one request at a time and waits for its reply. It talks to a *transport*:
any object with ``write(data)``, ``read(max_bytes)`` (returns what is available, possibly ``b''`` after
a short wait), ``reset_input_buffer()`` and ``close()``. :class:`SerialTransport` is the pyserial one
(a real board, or the virtual token's pty); tests pass their own.

Exceptions never carry secret material: a seed is never formatted into a message, and a key check
value (24 bits derived from the seed) is not either.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

from keyfob import errors, otp
from keyfob.device import frames
from keyfob.errors import Failed, KeyfobError, Unavailable
from keyfob.serials import normalize_serial

DEFAULT_TIMEOUT = 3.0
#: RESET has no overall bound (the scrub takes minutes on large flash): the token reports progress
#: at least once a second (docs/protocol.md, RESET), and this is the longest wait for the next report.
RESET_TIMEOUT = 10.0
BAUDRATE = 115200


class DeviceError(KeyfobError):
    """Something went wrong talking to a token."""


class ProtocolError(DeviceError, Unavailable):
    """No answer, or no valid answer, from the token (not running the keyfob firmware, or busy)."""


class FrameRejected(ProtocolError):
    """The token received a damaged frame (CRC, truncated, ...): the link, not the request, is at fault."""

    def __init__(self, reason: str, text: str):
        self.reason = reason
        self.text = text
        super().__init__(f"token rejected the frame ({reason}): {text}")


class Refused(DeviceError, errors.Refused):
    """The token answered with an error: ``reason`` is the code of docs/protocol.md section 4."""

    def __init__(self, reason: str, text: str, request: str = ""):
        self.reason = reason
        self.text = text
        self.request = request
        super().__init__(f"{request or 'request'} refused by token ({reason}): {text}")


class KcvMismatch(DeviceError, Failed):
    """The key check value from the token is not the one of the seed sent: the seed did not land intact."""


@dataclass(frozen=True)
class TokenInfo:
    """The INFO reply (docs/protocol.md, INFO). ``time`` is None when the token's clock is not trustworthy."""

    proto: int
    firmware: str
    board: str
    serial: str
    mode: str
    algorithm: str
    digits: int
    period: int
    counter: int
    provisioned: bool
    locked: bool
    time: int | None
    drift_ppb: int
    synced_at: int
    #: clock jumps the locked token accepted because its clock was lost (docs/protocol.md section 5)
    jumps: int = 0
    #: parts that stopped answering since boot, e.g. ``("oled",)``
    faults: tuple[str, ...] = ()

    @property
    def drift_ppm(self) -> float:
        """Learned drift in ppm, positive when the token's clock runs fast."""
        return self.drift_ppb / 1000

    @classmethod
    def from_reply(cls, obj: dict) -> TokenInfo:
        try:
            return cls(
                proto=int(obj["proto"]),
                firmware=str(obj["fw"]),
                board=str(obj["board"]),
                serial=str(obj["serial"]),
                mode=str(obj["mode"]),
                algorithm=str(obj["algorithm"]),
                digits=int(obj["digits"]),
                period=int(obj["period"]),
                counter=int(obj["counter"]),
                provisioned=bool(obj["provisioned"]),
                locked=bool(obj["locked"]),
                time=None if obj["time"] is None else int(obj["time"]),
                drift_ppb=int(obj["drift_ppb"]),
                synced_at=int(obj["synced_at"]),
                # Firmware before clock-jump counting has neither field.
                jumps=int(obj.get("jumps", 0)),
                faults=tuple(str(f) for f in obj.get("faults", ())),
            )
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("INFO reply is missing fields (firmware too old or too new?)") from None


@dataclass(frozen=True)
class TimeSync:
    """The SETTIME reply: the offset found before setting (token minus host, seconds; None when the
    token's clock was lost), seconds since the previous sync (None on the first), the drift now in use
    and whether this sync taught the token a new drift value. ``set``: False when a locked token found
    itself within a second and changed nothing; ``jump``: a locked token's lost clock was set and the
    jump counted (``jumps``: the count now)."""

    offset: int | None
    elapsed: int | None
    drift_ppb: int
    learned: bool
    set: bool = True
    jump: bool = False
    jumps: int = 0

    @property
    def drift_ppm(self) -> float:
        return self.drift_ppb / 1000


@dataclass(frozen=True)
class ResetProgress:
    """One PROGRESS report of a RESET: ``step`` is ``wait`` (seconds waited for the button, of
    ``total``), ``hold`` (seconds of the hold countdown held, of ``total``) or ``scrub`` (bytes of
    free flash zeroed, of ``total``)."""

    step: str
    done: int
    total: int

    @classmethod
    def from_reply(cls, obj: dict) -> ResetProgress:
        try:
            step, done, total = obj["step"], obj["done"], obj["total"]
        except KeyError:
            raise ProtocolError("PROGRESS report is missing fields") from None
        if not isinstance(step, str) or type(done) is not int or type(total) is not int:
            raise ProtocolError("PROGRESS report with fields of the wrong type")
        return cls(step, done, total)


class SerialTransport:
    """A pyserial port as a transport. ``port`` is a device path or a pyserial URL; an already open
    ``serial.Serial`` may be given instead."""

    def __init__(self, port, baudrate: int = BAUDRATE, poll: float = 0.05):
        if isinstance(port, str):
            import serial  # pyserial; imported here so the codec works without it

            self._ser = serial.serial_for_url(port, baudrate=baudrate, timeout=poll, write_timeout=5)
        else:
            self._ser = port
            self._ser.timeout = poll

    def write(self, data: bytes) -> None:
        self._ser.write(data)
        self._ser.flush()

    def read(self, max_bytes: int) -> bytes:
        first = self._ser.read(1)  # waits up to `poll`
        if not first:
            return b""
        more = min(self._ser.in_waiting, max_bytes - 1)
        return first + (self._ser.read(more) if more > 0 else b"")

    def reset_input_buffer(self) -> None:
        self._ser.reset_input_buffer()

    def close(self) -> None:
        self._ser.close()


class TokenClient:
    """One token on one port.

    >>> with TokenClient("/dev/ttyACM0") as tok:      # doctest: +SKIP
    ...     tok.info().serial
    """

    def __init__(self, port_or_serial, timeout: float = DEFAULT_TIMEOUT, reset_timeout: float = RESET_TIMEOUT):
        if isinstance(port_or_serial, str) or hasattr(port_or_serial, "in_waiting"):
            self._t = SerialTransport(port_or_serial)
        else:
            self._t = port_or_serial
        self.timeout = timeout
        self.reset_timeout = reset_timeout
        self._dec = frames.Decoder()

    def close(self) -> None:
        self._t.close()

    def __enter__(self) -> TokenClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the exchange -----------------------------------------------------------------

    def request(
        self,
        rtype: int,
        fields: dict | None = None,
        timeout: float | None = None,
        progress: Callable[[dict], None] | None = None,
    ) -> dict:
        """Send one request, return the OK reply's JSON object; raise on ERROR or no answer.

        With ``progress``, PROGRESS frames for this request go to it, and ``timeout`` bounds each
        wait for the next frame rather than the whole request."""
        name = frames.NAMES.get(rtype, f"type {rtype:#04x}")
        data = frames.encode_json(rtype, fields)
        self._t.reset_input_buffer()
        self._dec.reset()
        self._t.write(data)
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        damaged = 0
        while True:
            for frame in self._dec.feed(self._t.read(1024)):
                if progress is not None and frame.error is None and frame.type == frames.PROGRESS:
                    try:
                        obj = frames.decode_payload(frame)
                    except frames.FrameError:
                        damaged += 1
                        continue
                    if obj["re"] == rtype:
                        deadline = time.monotonic() + wait  # the token is alive: the next step's bound
                        progress(obj)
                    continue
                if frame.error is not None or frame.type not in (frames.OK, frames.ERROR):
                    # Line noise, REPL echo, a frame we sent echoed back: not our answer.
                    damaged += frame.error is not None
                    continue
                try:
                    obj = frames.decode_payload(frame)
                except frames.FrameError:
                    damaged += 1
                    continue
                if frame.type == frames.ERROR and obj["reason"] in frames.FRAME_REASONS:
                    raise FrameRejected(obj["reason"], obj["text"])
                if obj["re"] != rtype:
                    continue  # a late answer to an earlier request
                if frame.type == frames.ERROR:
                    raise Refused(obj["reason"], obj["text"], name)
                return obj
            if time.monotonic() >= deadline:
                extra = f" ({damaged} damaged frames seen)" if damaged else ""
                if progress is not None:
                    raise ProtocolError(f"{name}: the token sent nothing for {wait:g} s{extra} (unplugged, or stuck)")
                raise ProtocolError(
                    f"no answer to {name} within {wait:g} s{extra}: is the keyfob firmware running and idle?"
                )

    # --- commands -----------------------------------------------------------------------

    def info(self) -> TokenInfo:
        """Firmware, board, serial, settings, lock state, clock and learned drift. Never the seed."""
        return TokenInfo.from_reply(self.request(frames.INFO))

    def provision(self, record) -> str:
        """Write ``record`` (a :class:`keyfob.records.TokenRecord`) to an unprovisioned token.

        Returns the key check value after checking it against the one computed here from the seed
        (:func:`keyfob.otp.key_check_value`, compared in constant time); :class:`KcvMismatch` if they
        differ. Does not set the clock nor lock: call :meth:`settime` and :meth:`lock` next.
        """
        fields = {
            "seed": bytes(record.secret).hex(),
            "serial": normalize_serial(record.serial),
            "mode": record.mode,
            "algorithm": record.algorithm,
            "digits": record.digits,
            "period": record.period,
            "counter": record.counter,
        }
        obj = self.request(frames.PROVISION, fields)
        kcv = obj.get("kcv")
        if not isinstance(kcv, str):
            raise ProtocolError("PROVISION reply without a key check value")
        want = otp.key_check_value(bytes(record.secret), record.algorithm)
        if not hmac.compare_digest(kcv.encode("ascii", "replace"), want.encode("ascii")):
            raise KcvMismatch(
                f"token {record.serial}: key check value mismatch, the seed did not land intact; "
                "factory-reset the token and provision it again"
            )
        return kcv

    def settime(self, now: float | None = None) -> TimeSync:
        """Set the token's clock to ``now`` (default: this computer's clock, UTC) rounded to the second."""
        t = round(time.time() if now is None else now)
        obj = self.request(frames.SETTIME, {"t": t})
        try:
            return TimeSync(
                offset=None if obj["offset"] is None else int(obj["offset"]),
                elapsed=None if obj["elapsed"] is None else int(obj["elapsed"]),
                drift_ppb=int(obj["drift_ppb"]),
                learned=bool(obj["learned"]),
                set=bool(obj.get("set", True)),
                jump=bool(obj.get("jump", False)),
                jumps=int(obj.get("jumps", 0)),
            )
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("SETTIME reply is missing fields") from None

    def lock(self) -> None:
        """Close the token's REPL for good (until a factory reset)."""
        self.request(frames.LOCK)

    def reset(self, progress: Callable[[ResetProgress], None] | None = None) -> None:
        """Factory reset. The token asks for its button: pressed within 10 s and held through a 5 s
        countdown (letting go cancels). Then it wipes and scrubs its flash, reporting each step to
        ``progress``. Returns only once the token says the scrub completed.

        :class:`Refused` with reason ``presence`` (nobody pressed), ``cancelled`` (let go before the
        countdown ended; nothing changed) or ``storage`` (the flash failed during the wipe; the token
        stays locked until a reset completes).
        """

        def report(obj: dict) -> None:
            step = ResetProgress.from_reply(obj)
            if progress is not None:
                progress(step)

        obj = self.request(frames.RESET, timeout=self.reset_timeout, progress=report)
        if obj.get("scrubbed") is not True:
            raise ProtocolError(
                "RESET reply does not say the flash scrub completed (firmware too old?): treat the token as not wiped"
            )
