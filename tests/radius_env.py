"""A real ``keyfob radius`` process on a fresh verifier database, for the RADIUS and PAM tests.

Users ``u0``, ``u1``, ... each have their own HOTP token (linked with its counter-0 code), so every
test logs in as a user of its own; :meth:`RadiusEnv.code` gives the next code from pyotp.
Clients: 127.0.0.1 must sign its requests (Message-Authenticator); 127.0.0.2 is an old NAS allowed
to leave it out, with another secret.
"""

from __future__ import annotations

import base64
import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.verifier import Policy, Verifier

SECRET = "strict-nas-secret-0123"
OLD_SECRET = "old-nas-secret-456789"
USERS = 10


def password(n: int) -> str:
    return f"pass word {n}!"


@dataclass
class RadiusEnv:
    proc: subprocess.Popen
    port: int
    db: Path
    key_file: Path
    seeds: dict = field(repr=False)  # secrets: never in a failure's output
    counters: dict = field(default_factory=dict)

    def code(self, user: str) -> str:
        """The user's next HOTP code (pyotp as the oracle)."""
        n = self.counters.get(user, 0) + 1
        self.counters[user] = n
        return pyotp.HOTP(base64.b32encode(self.seeds[user]).decode()).at(n)

    def validations(self, user: str) -> int:
        """Login attempts the verifier audited for ``user`` (the test reads the database itself)."""
        with Verifier.open(self.db, key_file=self.key_file, password_profile="fast") as v:
            return sum(r.count for r in v.audit(user=user, action="validate", limit=1000))


def start(tmp: Path) -> RadiusEnv:
    db, key_file = tmp / "v.db", tmp / "v.key"
    seeds = {}
    with Verifier.init(db, key_file=key_file, policy=Policy(password_profile="fast")) as v:
        for n in range(USERS):
            seed = os.urandom(20)
            serial = make_serial(100 + n)
            v.import_records([TokenRecord(serial, "hotp", "sha1", 6, seed)])
            v.add_user(f"u{n}", password(n))
            assert v.link(f"u{n}", serial, pyotp.HOTP(base64.b32encode(seed).decode()).at(0)).accepted
            seeds[f"u{n}"] = seed
    clients = tmp / "clients.toml"
    clients.write_text(
        f'[[client]]\naddress = "127.0.0.1"\nsecret = "{SECRET}"\n\n'
        f'[[client]]\naddress = "127.0.0.2/32"\nsecret = "{OLD_SECRET}"\nallow_missing_message_authenticator = true\n'
    )
    clients.chmod(0o600)
    env = {**os.environ, "KEYFOB_ARGON2_PROFILE": "fast"}
    exe = Path(sys.executable).with_name("keyfob")
    proc = subprocess.Popen(
        [exe, "radius", "--port", "0", "--db", db, "--key-file", key_file, "--clients", clients, "--workers", "2"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    line = proc.stderr.readline()  # "listening on HOST:PORT ..." once the socket is bound
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"keyfob radius did not start: {line!r}")
    port = int(line.split()[2].rsplit(":", 1)[1])
    return RadiusEnv(proc, port, db, key_file, seeds)


def stop(env: RadiusEnv) -> str:
    """Stop the server (SIGTERM) and return what it logged after starting."""
    env.proc.terminate()
    try:
        _, err = env.proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        env.proc.kill()
        _, err = env.proc.communicate()
    return err


# --- PAM: a service file of a unique name in /etc/pam.d, removed afterwards ----------------------

PAM_DIR = Path("/etc/pam.d")


def pam_module(name: str) -> Path | None:
    """Where Linux-PAM's module ``name`` is installed, if it is (Debian: /lib/<triplet>/security)."""
    for pattern in ("/lib/*/security/", "/usr/lib/*/security/", "/lib*/security/", "/usr/lib*/security/"):
        hits = glob.glob(pattern + name)
        if hits:
            return Path(hits[0])
    return None


def pam_skip_reason(module: str) -> str | None:
    """One line saying why a pamtester login cannot run here, or None."""
    if shutil.which("pamtester") is None:
        return "pamtester not installed (Debian pamtester; `make test` installs it as root)"
    if pam_module(module) is None:
        return f"{module} not installed"
    if not os.access(PAM_DIR, os.W_OK):
        return f"cannot write a PAM service into {PAM_DIR} (not root)"
    return None


class PamService:
    """``with PamService(lines) as name:`` a service /etc/pam.d/<name> for pamtester."""

    def __init__(self, auth_line: str):
        self.name = f"keyfob-test-{os.getpid()}-{os.urandom(4).hex()}"
        self.path = PAM_DIR / self.name
        self.text = f"auth required {auth_line}\naccount required pam_permit.so\n"

    def __enter__(self) -> str:
        self.path.write_text(self.text)
        return self.name

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def pamtester(service: str, user: str, typed: str) -> bool:
    """A real PAM conversation: pamtester authenticates ``user``, answering the prompt with ``typed``."""
    r = subprocess.run(
        ["pamtester", service, user, "authenticate"], input=typed + "\n", capture_output=True, text=True, timeout=60
    )
    assert ("successfully authenticated" in r.stderr + r.stdout) == (r.returncode == 0), r.stderr
    return r.returncode == 0
