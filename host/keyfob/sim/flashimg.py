"""Virtual flash images of the virtual token (LittleFS v2 in a file, like an ESP32's or an
RP2040's filesystem partition). The sim formats a blank image at its first boot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

BLOCK_SIZE = 4096
DEFAULT_BLOCKS = 256  # 1 MiB


def blank(path: str | os.PathLike, blocks: int = DEFAULT_BLOCKS, block_size: int = BLOCK_SIZE) -> Path:
    """Write an erased image (all 0xFF, like a new flash chip)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(b"\xff" * (blocks * block_size))
    os.replace(tmp, p)
    return p


def copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy an image (e.g. to keep a provisioned token's flash for later tests)."""
    shutil.copyfile(src, dst)
    return Path(dst)
