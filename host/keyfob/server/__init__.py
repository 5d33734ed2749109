"""``keyfob serve``: the verifier over HTTP, in privacyIDEA's shape, under uvicorn.

A front only: every rule (policy, throttling, audit, what a relying party learns) is the verifier
library's. This package turns HTTP into library calls and back:

* :mod:`.app`: the app factory (``create_app``) and the one uvicorn starts (``from_env``);
* :mod:`.answers`: the JSON shapes of answers and errors;
* :mod:`.limits`: body size, content types, fields and their lengths;
* :mod:`.keys`: the API key a request must bring (``Authorization: Bearer kf_...``);
* :mod:`.validate`: ``POST /validate/check``;
* :mod:`.admin`: ``/admin/...``, what the CLI's admin commands do;
* ``/web/...``: the security center's pages, :mod:`keyfob.web`, mounted by ``create_app``.
"""

from .app import create_app

__all__ = ["create_app"]
