"""Talking to a keyfob token over its USB serial port (the provisioning protocol, docs/protocol.md).

:mod:`keyfob.device.frames` is the wire codec, :mod:`keyfob.device.client` the commands
(:class:`TokenClient`). Nothing here imports firmware code: the token's side is
``firmware/proto.py``, and the tests hold the two to the same specification.
"""

from keyfob.device.client import (
    DeviceError,
    FrameRejected,
    KcvMismatch,
    ProtocolError,
    Refused,
    SerialTransport,
    TimeSync,
    TokenClient,
    TokenInfo,
)

__all__ = [
    "DeviceError",
    "FrameRejected",
    "KcvMismatch",
    "ProtocolError",
    "Refused",
    "SerialTransport",
    "TimeSync",
    "TokenClient",
    "TokenInfo",
]
