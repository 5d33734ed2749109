"""A Linux login through pam_exec calling ``keyfob validate`` (issue 12, PAM), driven by pamtester.

pam_exec runs a command with the user in $PAM_USER and, with ``expose_authtok``, what was typed on
standard input; the README's wrapper script turns that into ``keyfob validate``. The pam_radius_auth
way is tested in test_radius.py, beside the server it talks to.
"""

import base64
import os
import sys
from pathlib import Path

import pyotp
import pytest
import radius_env as renv
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.verifier import Policy, Verifier

PW = "pam pass 1"
SEED = os.urandom(20)

pytestmark = pytest.mark.skipif(
    bool(renv.pam_skip_reason("pam_exec.so")), reason=str(renv.pam_skip_reason("pam_exec.so"))
)


@pytest.fixture
def pam_exec(tmp_path):
    """A verifier with user ``pat`` (HOTP, linked at counter 0) and the wrapper pam_exec calls."""
    db, key = tmp_path / "v.db", tmp_path / "v.key"
    with Verifier.init(db, key_file=key, policy=Policy(password_profile="fast")) as v:
        v.import_records([TokenRecord(make_serial(500), "hotp", "sha1", 6, SEED)])
        v.add_user("pat", PW)
        assert v.link("pat", make_serial(500), hotp(0)).accepted
    wrapper = tmp_path / "keyfob-pam"
    keyfob = Path(sys.executable).with_name("keyfob")
    # the README's wrapper; pam_exec gives no PATH and no environment of the caller
    wrapper.write_text(
        "#!/bin/sh\n"
        "export KEYFOB_ARGON2_PROFILE=fast\n"
        f"exec {keyfob} validate --db {db} --key-file {key} "
        '${PAM_RHOST:+--source "$PAM_RHOST"} "$@" -- "$PAM_USER" -\n'
    )
    wrapper.chmod(0o700)
    return wrapper


def hotp(n: int) -> str:
    return pyotp.HOTP(base64.b32encode(SEED).decode()).at(n)


def test_pam_exec_password_and_code_in_one_field(pam_exec):
    with renv.PamService(f"pam_exec.so expose_authtok quiet {pam_exec}") as service:
        # each login is a fresh `keyfob validate` process (about a second of imports): few of them
        assert not renv.pamtester(service, "pat", "wrong" + hotp(1))
        assert renv.pamtester(service, "pat", PW + hotp(1))


def test_pam_exec_code_only_after_another_factor(pam_exec):
    # e.g. sshd with AuthenticationMethods publickey,keyboard-interactive: the key was the first
    # factor, this stack asks for the code alone
    with renv.PamService(f"pam_exec.so expose_authtok quiet {pam_exec} --code-only") as service:
        assert renv.pamtester(service, "pat", hotp(1))
        assert not renv.pamtester(service, "pat", hotp(1))  # replay
