"""The development path onto a virtual token: write the store through the (unlocked) raw REPL.

Tests and benchmarks use it to set a token up fast and with a known seed; real provisioning goes
over the USB protocol (:mod:`keyfob.provision`) and locks the REPL, after which this no longer
works — which is the point.
"""

from __future__ import annotations

from keyfob.deploy import Repl
from keyfob.params import DEFAULT_ALGORITHM, DEFAULT_DIGITS, DEFAULT_PERIOD
from keyfob.sim.token import SimError, VirtualToken


def dev_provision(
    tok: VirtualToken,
    seed: bytes,
    serial: str = "KF000123459",
    mode: str = "hotp",
    algorithm: str = DEFAULT_ALGORITHM,
    digits: int = DEFAULT_DIGITS,
    period: int = DEFAULT_PERIOD,
    counter: int = 0,
    wait: bool = True,
) -> None:
    """Provision ``tok``'s store directly, then soft-reset so the firmware starts provisioned.

    ``wait``: first wait for the firmware to be idle (a token just switched on is booting, and
    a board's Ctrl-C is now and then off while it boots: mpremote's would be data); False for
    a token already at its REPL."""
    code = (
        "import store\n"
        f"store.Store().provision({seed!r}, {serial!r}, {mode!r}, {algorithm!r}, {digits}, {period}, {counter})\n"
    )
    if wait:
        tok.wait_idle()
    try:
        with Repl(tok.port) as repl:
            repl.enter()
            repl.exec(code)
    except Exception as exc:  # DeployError, transport errors: one clear message, no seed in it
        raise SimError(f"development provisioning over the raw REPL failed: {type(exc).__name__}") from None
    tok.soft_reset()
    tok.wait_idle()
