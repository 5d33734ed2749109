"""Ask every listed device who it is: INFO from the keyfob firmware, in parallel, with a short
timeout, so `keyfob devices` tells tokens (serial, mode, lock state) from bare boards."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Sequence

from keyfob.device.client import DeviceError, TokenClient, TokenInfo
from keyfob.device.ports import Device

INFO_TIMEOUT = 1.0


def info_of(port: str, timeout: float = INFO_TIMEOUT) -> TokenInfo | None:
    """INFO from ``port``, or None when nothing answers (a bare board, busy firmware, a port in use)."""
    try:
        with TokenClient(port, timeout=timeout) as client:
            return client.info()
    except (DeviceError, OSError):
        return None


def survey(devices: Sequence[Device], timeout: float = INFO_TIMEOUT) -> list[tuple[Device, TokenInfo | None]]:
    """Each device with its INFO (None: no keyfob firmware answered), asked in parallel."""
    if not devices:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(devices))) as pool:
        infos = list(pool.map(lambda d: info_of(d.port, timeout), devices))
    return list(zip(devices, infos, strict=True))


def info_dict(info: TokenInfo | None) -> dict | None:
    """INFO as plain data for --json (it never holds a seed or a code)."""
    return None if info is None else asdict(info)
