"""``keyfob radius`` throughput: decided Access-Requests per second (issue 12, RADIUS).

A real ``keyfob radius`` process (2 workers) on a SQLite file, and a client in this process keeping
32 signed Access-Requests in flight (pyrad encodes them), each a right password+code for one of 32
users (HOTP, fast test hash). Every answer is checked (an Access-Accept with a valid
Message-Authenticator). The baseline, measured in the same run: ``Verifier.verify`` of the same
kind of logins in this process, one thread. Target: RADIUS keeps at least half of that rate
(ratio = RADIUS / in-process, target >= 0.5): the protocol, the MD5/HMAC work and the UDP loop
must not cost more than the login itself.

Run: ``python -m bench.bench_radius`` (or through ``make bench``).
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from keyfob.otp import HotpKey
from keyfob.records import TokenRecord
from keyfob.serials import make_serial
from keyfob.verifier import Policy, Verifier
from pyrad import packet as rp

from bench import Row

USERS = 32
IN_FLIGHT = 32
REQUESTS = 1500
SECRET = b"bench-radius-secret-0001"


def _password(n: int) -> str:
    return f"bench password {n}"


def _setup(tmp: Path, base: int):
    """A database with USERS users, each linked to its own HOTP token; their keys."""
    db, key_file = tmp / f"v{base}.db", tmp / "v.key"
    keys = {}
    with Verifier.init(db, key_file=key_file, policy=Policy(password_profile="fast")) as v:
        for n in range(USERS):
            seed = os.urandom(20)
            serial = make_serial(base + n)
            v.import_records([TokenRecord(serial, "hotp", "sha1", 6, seed)])
            v.add_user(f"b{n}", _password(n))
            k = HotpKey(seed)
            assert v.link(f"b{n}", serial, k.codes(0, 1)[0]).accepted
            keys[f"b{n}"] = k
    return db, key_file, keys


def _logins(keys, count):
    """(user, password+code) for ``count`` logins, round-robin over the users in ``keys``,
    each code the user's next."""
    out, nxt, names = [], dict.fromkeys(keys, 1), list(keys)
    for i in range(count):
        u = names[i % len(names)]
        out.append((u, _password(int(u[1:])) + keys[u].codes(nxt[u], 1)[0]))
        nxt[u] += 1
    return out


def in_process_rate(tmp: Path) -> float:
    db, key_file, keys = _setup(tmp, 2000)
    logins = _logins(keys, 600)
    with Verifier.open(db, key_file=key_file, password_profile="fast") as v:
        t0 = time.perf_counter()
        for u, text in logins:
            assert v.verify(u, text).accepted
        return len(logins) / (time.perf_counter() - t0)


def radius_rate(tmp: Path) -> float:
    db, key_file, keys = _setup(tmp, 3000)
    clients = tmp / "clients.toml"
    clients.write_text(f'[[client]]\naddress = "127.0.0.1"\nsecret = "{SECRET.decode()}"\n')
    clients.chmod(0o600)
    exe = Path(sys.executable).with_name("keyfob")
    cmd = [exe, "radius", "--port", "0", "--db", db, "--key-file", key_file, "--clients", clients, "--workers", "2"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "KEYFOB_ARGON2_PROFILE": "fast"})
    try:
        line = proc.stderr.readline()
        port = int(line.split()[2].rsplit(":", 1)[1])
        return _drive(port, keys)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _drive(port: int, keys) -> float:
    """Keep IN_FLIGHT requests outstanding: socket i logs in user i, one login at a time (an HOTP
    code after a later one would be refused, rightly)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(IN_FLIGHT)]
    todo = {sk: _logins({f"b{i}": keys[f"b{i}"]}, REQUESTS // IN_FLIGHT) for i, sk in enumerate(socks)}
    pending, done = {}, 0

    def send(sk):
        u, text = todo[sk].pop(0)
        pkt = rp.AuthPacket(code=rp.AccessRequest, secret=SECRET, id=0)
        pkt.authenticator = pkt.CreateAuthenticator()
        pkt[1] = [u.encode()]
        pkt[2] = [pkt.PwCrypt(text)]
        pkt.add_message_authenticator()
        pending[sk] = pkt
        sk.sendto(pkt.RequestPacket(), ("127.0.0.1", port))

    try:
        t0 = time.perf_counter()
        for sk in socks:
            send(sk)
        while pending:
            ready, _, _ = select.select(list(pending), [], [], 10)
            if not ready:
                raise RuntimeError("keyfob radius stopped answering")
            for sk in ready:
                raw = sk.recv(4096)
                pkt = pending.pop(sk)
                reply = rp.AuthPacket(packet=raw, secret=SECRET)
                if not (pkt.VerifyReply(reply, raw, enforce_ma=True) and reply.code == rp.AccessAccept):
                    raise RuntimeError("a right login was not accepted")
                done += 1
                if todo[sk]:
                    send(sk)
        return done / (time.perf_counter() - t0)
    finally:
        for sk in socks:
            sk.close()


def run() -> list[Row]:
    with tempfile.TemporaryDirectory() as d:
        base = in_process_rate(Path(d))
        rate = radius_rate(Path(d))
    ratio = rate / base
    return [
        Row(
            f"RADIUS Access-Requests decided, {IN_FLIGHT} in flight, 2 workers (SQLite, fast hash)",
            rate,
            "requests/s",
            ">= 0.5x in-process verify",
            ratio >= 0.5,
            ratio,
            f"Verifier.verify in-process, same run: {base:,.0f}/s",
        )
    ]


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table(run())
