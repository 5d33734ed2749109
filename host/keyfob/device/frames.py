"""The provisioning protocol's frames (docs/protocol.md, sections 1-4), host side.

A logical frame is ``magic (FB 4B 46) | version | type | length (2, big-endian) | payload | CRC-32``,
the CRC (ISO-HDLC / zlib polynomial, as ``binascii.crc32``) covering every byte before it. On the wire
each byte after the magic that is a C0 control byte, DEL, ``FB`` or ``FD`` is sent as ``FD, b ^ 0x20``
(byte stuffing in the manner of RFC 1662 section 4.2), so no REPL control byte ever travels and ``FB``
marks a frame start only. Payloads are compact JSON objects (RFC 8259).

This module mirrors ``firmware/proto.py``; it never imports it.
"""

from __future__ import annotations

import binascii
import json
import struct
from dataclasses import dataclass, field

from keyfob.errors import Failed

MAGIC = b"\xfbKF"
VERSION = 1
ESC = 0xFD
HEADER = 7
MAX_FRAME = 512
MAX_PAYLOAD = MAX_FRAME - HEADER - 4  # 501
FRAME_TIMEOUT_MS = 1000

INFO = 0x01
PROVISION = 0x02
SETTIME = 0x03
LOCK = 0x04
RESET = 0x05
OK = 0x80
ERROR = 0x81
PROGRESS = 0x82

NAMES = {
    INFO: "INFO",
    PROVISION: "PROVISION",
    SETTIME: "SETTIME",
    LOCK: "LOCK",
    RESET: "RESET",
    OK: "OK",
    ERROR: "ERROR",
    PROGRESS: "PROGRESS",
}

#: Error reasons about the frame itself (the request never reached its handler).
FRAME_REASONS = frozenset({"crc", "truncated", "oversize", "version", "framing"})
#: Every reason code a token may answer with (docs/protocol.md section 4).
REASONS = FRAME_REASONS | {
    "unknown",
    "payload",
    "field",
    "provisioned",
    "unprovisioned",
    "presence",
    "cancelled",
    "storage",
    "clock",
    "jump",
    "rtc",
    "internal",
}

_ESCAPED = frozenset(list(range(0x20)) + [0x7F, MAGIC[0], ESC])
_HEADER = struct.Struct(">3sBBH")
_CRC = struct.Struct(">I")


class FrameError(Failed, ValueError):
    """A frame that cannot be built, or a reply payload that is not what the protocol says."""


@dataclass(frozen=True)
class Frame:
    """One received frame: its type and payload, or ``error`` (a reason from FRAME_REASONS) if it was bad.

    The payload of a PROVISION frame holds a seed, so it is left out of ``repr``.
    """

    type: int
    payload: bytes = field(default=b"", repr=False)
    error: str | None = None


def escape(data: bytes) -> bytes:
    """Byte-stuff ``data`` (everything of a frame after the magic)."""
    out = bytearray()
    for b in data:
        if b in _ESCAPED:
            out += bytes((ESC, b ^ 0x20))
        else:
            out.append(b)
    return bytes(out)


def encode_frame(ftype: int, payload: bytes = b"", version: int = VERSION) -> bytes:
    """One frame as sent on the wire (escaped). ``version`` other than 1 is for tests only."""
    if not 0 <= ftype <= 0xFF:
        raise FrameError(f"frame type out of range: {ftype}")
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(payload)} bytes is longer than {MAX_PAYLOAD}")
    body = _HEADER.pack(MAGIC, version, ftype, len(payload)) + bytes(payload)
    return MAGIC + escape(body[3:] + _CRC.pack(binascii.crc32(body)))


def encode_raw(
    ftype: int, payload: bytes, length: int | None = None, crc: int | None = None, version: int = VERSION
) -> bytes:
    """A frame with a chosen length field and CRC (possibly wrong): for testing a receiver."""
    n = len(payload) if length is None else length
    body = _HEADER.pack(MAGIC, version, ftype, n) + bytes(payload)
    c = binascii.crc32(body) if crc is None else crc
    return MAGIC + escape(body[3:] + _CRC.pack(c))


def encode_json(ftype: int, fields: dict | None = None) -> bytes:
    """A frame whose payload is ``fields`` as compact JSON (empty payload for ``None``)."""
    payload = b"" if fields is None else json.dumps(fields, separators=(",", ":")).encode()
    return encode_frame(ftype, payload)


def decode_payload(frame: Frame) -> dict:
    """The JSON object of a reply; :class:`FrameError` if it is not one or has no integer ``re``."""
    try:
        obj = json.loads(frame.payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise FrameError("reply payload is not JSON") from None
    if not isinstance(obj, dict) or type(obj.get("re")) is not int:
        raise FrameError("reply payload is not a JSON object with 're'")
    if frame.type == ERROR and not (isinstance(obj.get("reason"), str) and isinstance(obj.get("text"), str)):
        raise FrameError("error reply without reason and text")
    return obj


class Decoder:
    """Stream decoder, the same state machine as the token's (docs/protocol.md section 1.2).

    ``feed(data)`` returns every frame completed by ``data`` (good ones, and bad ones with ``error``
    set). Bytes outside frames are skipped. There is no timeout here: the client has a deadline.
    """

    _SCAN, _MAGIC, _BODY = range(3)

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._state = self._SCAN
        self._buf = bytearray()
        self._esc = False
        self._need = 0

    @property
    def busy(self) -> bool:
        return self._state != self._SCAN

    def _fail(self, reason: str) -> Frame:
        ftype = self._buf[4] if len(self._buf) > 4 else 0
        self.reset()
        return Frame(ftype, b"", reason)

    def feed(self, data: bytes) -> list[Frame]:
        out = []
        for b in data:
            frame = self._byte(b)
            if frame is not None:
                out.append(frame)
        return out

    def _byte(self, b: int) -> Frame | None:
        if b == MAGIC[0]:
            self._state = self._MAGIC
            self._buf = bytearray((b,))
            self._esc = False
            return None
        if self._state == self._SCAN:
            return None
        buf = self._buf
        if self._state == self._MAGIC:
            if b == MAGIC[len(buf)]:
                buf.append(b)
                if len(buf) == 3:
                    self._state = self._BODY
            else:
                self._state = self._SCAN
            return None
        if self._esc:
            self._esc = False
            b ^= 0x20
            if b not in _ESCAPED:
                return self._fail("framing")
        elif b == ESC:
            self._esc = True
            return None
        elif b < 0x20 or b == 0x7F:
            return self._fail("framing")
        buf.append(b)
        n = len(buf)
        if n == 4 and b != VERSION:
            return self._fail("version")
        if n == HEADER:
            length = buf[5] << 8 | buf[6]
            if length > MAX_PAYLOAD:
                return self._fail("oversize")
            self._need = HEADER + length + 4
        elif n > HEADER and n == self._need:
            if _CRC.unpack_from(buf, n - 4)[0] != binascii.crc32(buf[: n - 4]):
                return self._fail("crc")
            frame = Frame(buf[4], bytes(buf[HEADER : n - 4]))
            self.reset()
            return frame
        return None
