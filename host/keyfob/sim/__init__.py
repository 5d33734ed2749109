"""The virtual token: the real firmware under the MicroPython unix port with emulated
hardware, driven from the host (docs/internals.md, "The virtual token")."""

from keyfob.sim.control import SimError, SimTimeout
from keyfob.sim.token import VirtualToken

__all__ = ["VirtualToken", "SimError", "SimTimeout"]
