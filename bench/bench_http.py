"""``keyfob serve`` under load: ``POST /validate/check`` requests per second and latency (issue 12).

The server (``keyfob serve --workers 2`` on SQLite, a subprocess on 127.0.0.1) and the client
(httpx's async client, :data:`CLIENTS` concurrent connections, each logging in one user with that
user's consecutive HOTP codes from an address of its own (``client``), so every request is a
decided, accepted login) run in the same run,
on the same machine. The key is a code-only validate key (``check_code``, as the in-process row of
``bench_verifier``), whose in-process rate, measured in the same run, is the baseline. Targets
(issue 12, 2 cores, SQLite): >= 1,000 decided logins per second and p99 <= 25 ms.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time

from bench import Row

CLIENTS = 32
PER_CLIENT = 40
WORKERS = 2
TARGET_RPS = 1000.0
TARGET_P99_MS = 25.0
SEED = bytes(range(9, 29))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _setup(wd: str) -> tuple[str, str, str]:
    from keyfob.otp import HotpKey
    from keyfob.records import TokenRecord
    from keyfob.serials import make_serial
    from keyfob.verifier import Policy, Verifier
    from keyfob.verifier.apikeys import ApiKeys

    db, key_file = os.path.join(wd, "v.db"), os.path.join(wd, "v.key")
    key = HotpKey(SEED)
    with Verifier.init(db, key_file=key_file, policy=Policy(password_profile="fast")) as v:
        for i in range(CLIENTS):
            serial = make_serial(88000 + i)
            v.import_records([TokenRecord(serial, "hotp", "sha1", 6, SEED)])
            v.add_user(f"http{i}", "bench password")
            v.link(f"http{i}", serial, key.code(0))
        api_key = ApiKeys(v).add("bench", "validate", code_only=True)[1]
    return db, key_file, api_key


def _start(db: str, key_file: str, port: int) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "KEYFOB_DB": db, "KEYFOB_KEY_FILE": key_file, "KEYFOB_ARGON2_PROFILE": "fast"}
    env.pop("KEYFOB_KEY", None)
    cmd = [sys.executable, "-c", "from keyfob.cli import main; main()", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        cmd + ["--workers", str(WORKERS)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError("bench: keyfob serve exited at start")
        try:
            httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=2)
            return proc
        except httpx.TransportError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("bench: keyfob serve did not listen within 60 s") from None
            time.sleep(0.2)


async def _load(port: int, api_key: str) -> tuple[int, float, list[float], list[str]]:
    import httpx
    from keyfob.otp import HotpKey

    codes = HotpKey(SEED).codes(1, PER_CLIENT)
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    headers = {"Authorization": f"Bearer {api_key}"}
    latencies: list[float] = []
    refused: list[str] = []  # what a request that was not an accepted login got (the first says why)
    accepted = 0

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, headers=headers) as client:

        async def one_client(i: int) -> None:
            nonlocal accepted
            for code in codes:
                t0 = time.perf_counter()
                r = await client.post(
                    "/validate/check", json={"user": f"http{i}", "pass": code, "client": f"10.0.0.{i}"}, timeout=60
                )
                latencies.append(time.perf_counter() - t0)
                ok = r.status_code == 200 and r.json()["result"]["value"] is True
                accepted += ok
                if not ok:
                    refused.append(f"{r.status_code} {r.text[:120]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))
        wall = time.perf_counter() - t0
    return accepted, wall, latencies, refused


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


def run() -> list[Row]:
    from bench import bench_verifier

    baseline = bench_verifier.e2e_per_second()  # the same logins in-process, this run
    with tempfile.TemporaryDirectory() as wd:
        db, key_file, api_key = _setup(wd)
        port = _free_port()
        proc = _start(db, key_file, port)
        try:
            accepted, wall, lat, refused = asyncio.run(_load(port, api_key))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if accepted != CLIENTS * PER_CLIENT:
        raise RuntimeError(
            f"bench: only {accepted} of {CLIENTS * PER_CLIENT} logins accepted; the first other answer: {refused[0]}"
        )
    rps = accepted / wall
    p50, p99 = _pct(lat, 0.50) * 1000, _pct(lat, 0.99) * 1000
    where = f"SQLite, {WORKERS} workers, {CLIENTS} clients"
    in_process = f"in-process check_code, same run ({baseline:,.0f}/s)"
    return [
        Row(
            f"http: /validate/check, {where}",
            rps,
            "logins/s",
            ">= 1000/s",
            rps >= TARGET_RPS,
            rps / baseline,
            in_process,
        ),
        Row(f"http: p50 latency, {where}", p50, "ms", "-", True),
        Row(f"http: p99 latency, {where}", p99, "ms", "<= 25 ms", p99 <= TARGET_P99_MS),
    ]


if __name__ == "__main__":
    from bench.__main__ import print_table

    print_table(run())
