"""``keyfob radius``: a RADIUS front (RFC 2865 PAP) over the one verifier.

* :mod:`.clients` reads which NAS may ask and with which shared secret.
* :mod:`.packets` turns one Access-Request into an Access-Accept or Access-Reject (or no answer),
  calling :meth:`keyfob.verifier.Verifier.verify`: no login rule lives here.
* :mod:`.server` is the UDP loop: a worker pool and RFC 5080's duplicate cache.

Like the rest of the library this never prints; it logs to ``keyfob.radius`` without secrets.
"""

from .clients import Client, Clients, ClientsError, load_clients
from .server import RadiusServer

__all__ = ["Client", "Clients", "ClientsError", "RadiusServer", "load_clients"]
