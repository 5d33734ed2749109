"""Where the firmware and the board layers are: the folder that holds ``firmware/`` and ``boards/``.

An installed wheel carries both inside the package, as ``keyfob/_payload/`` (copied there by the
build hook in setup.py; the top-level folders of the checkout are the only sources). An editable
install, or the checkout itself, uses the checkout's own folders, so an edit to the firmware is
what the next deploy builds.
"""

from __future__ import annotations

from pathlib import Path

from keyfob.errors import Unavailable

_PACKAGED = Path(__file__).resolve().with_name("_payload")


class PayloadMissing(Unavailable, RuntimeError):
    """This keyfob has no firmware/ and boards/ (a broken install)."""


def _has_payload(folder: Path) -> bool:
    return (folder / "firmware").is_dir() and (folder / "boards").is_dir()


def checkout() -> Path | None:
    """The source checkout keyfob runs from (``host/keyfob`` in it), or None for an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    if (root / "host" / "keyfob").is_dir() and _has_payload(root):
        return root
    return None


def root() -> Path:
    """The folder holding ``firmware/`` and ``boards/``: the package's copy in an installed wheel,
    else the checkout's."""
    if _has_payload(_PACKAGED):
        return _PACKAGED
    found = checkout()
    if found is None:
        raise PayloadMissing(f"no firmware/ and boards/ in {_PACKAGED} nor in a checkout: reinstall keyfob")
    return found
