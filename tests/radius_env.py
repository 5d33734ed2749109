"""A real ``keyfob radius`` process on a fresh verifier database, for the RADIUS and PAM tests.

Users ``u0``, ``u1``, ... each have their own HOTP token (linked with its counter-0 code), so every
test logs in as a user of its own; :meth:`RadiusEnv.code` gives the next code from pyotp.
Clients: 127.0.0.1 must sign its requests (Message-Authenticator); 127.0.0.2 is an old NAS allowed
to leave it out, with another secret.
"""

from __future__ import annotations

import base64
import os
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
