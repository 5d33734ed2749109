"""Power cuts at random points of a press on the virtual token (issue 3, acceptance 4).

50 cuts here, a mix of SIGKILLs at random instants after the press and exact cuts in the
middle of a flash block write; `make soak` runs the same loop 1,000 times. Checked after
every cut: no code is ever shown twice, the store always loads (the token never says
"Not provisioned"), and the counter never skips more than one value per cut.
"""

from __future__ import annotations

import random
import secrets

import pytest

from bench.power_cut import run_cuts

pytestmark = pytest.mark.timeout(300)


def test_fifty_cuts_during_presses(make_token):
    summary = run_cuts(make_token, secrets.token_bytes(20), 50, random.Random(secrets.randbits(32)))
    assert summary["ok"], summary["violations"]
    assert summary["cuts"] == 50
    assert summary["kill_cuts"] > 0 and summary["flash_cuts"] > 0  # both kinds of cut happened
    assert summary["not_provisioned"] == 0
    assert summary["codes_observed"] > 0
