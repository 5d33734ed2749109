"""A virtual token's life as the suite, the daemon and a user drive it, on both tiers: closed
twice (``with`` and the fixture's teardown both close), switched on after its close. A closed
descriptor number is the next file any thread opens, so whatever a token still does with its old
numbers lands in somebody else's file."""

from __future__ import annotations

import pytest
from conftest import on_both_tiers
from keyfob.sim import SimError

pytestmark = [pytest.mark.timeout(120), on_both_tiers]


def test_closing_twice_leaves_alone_the_files_that_took_its_numbers(make_token, tmp_path):
    tok = make_token()
    tok.close()
    files = [open(tmp_path / f"f{i}", "w+b", buffering=0) for i in range(8)]  # noqa: SIM115
    try:
        tok.close()  # a second time, as the fixture's teardown does after `with make_token() as tok:`
        for f in files:
            f.write(b"mine")  # OSError (EBADF) if the second close closed it
            f.seek(0)
            assert f.read() == b"mine", f"{f.name} was written to by the closed token"
    finally:
        for f in files:
            try:
                f.close()
            except OSError:
                pass


def test_a_closed_token_does_not_switch_on(make_token):
    tok = make_token()
    tok.close()
    with pytest.raises(SimError, match="closed"):
        tok.power_on()
    assert not tok.is_running
