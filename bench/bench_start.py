"""Start-up of the command line (issue 11, "Fast enough to be called per login").

Rows: wall time of ``keyfob --help`` and of ``keyfob validate --code-only USER CODE`` (a real user
with a linked HOTP token on a SQLite file made here, every run a fresh code that must be accepted),
each beside ``python -c pass`` measured in the same run; target <= 150 ms. Runs are interleaved
(pass, help, validate, ...) so that the load of a shared machine falls on all three alike; the
median of each is the value. ``python -c "import click"`` and ``python -c "import sqlalchemy"`` are
measured the same way and shown beside the rows: the floors of any command and of any command that
opens the database.

Bytecode is cached (in a temporary ``PYTHONPYCACHEPREFIX``, one warm-up run each), as it is for an
installed wheel; the environment's ``PYTHONDONTWRITEBYTECODE`` would otherwise make every run
compile keyfob's own modules.

Run: ``python -m bench.bench_start`` (or through ``make bench``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import Row

TARGET_MS = 150.0
RUNS = 9
SEED = bytes(range(60, 80))


def _keyfob() -> list[str]:
    script = Path(sys.executable).with_name("keyfob")
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "import sys; from keyfob.cli import main; sys.exit(main())"]


def _wall_ms(argv, env, expect=0) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ms = (time.perf_counter() - t0) * 1000
    if proc.returncode != expect:
        raise RuntimeError(f"bench: {argv[-4:]} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return ms


def _make_db(tmp: Path, env: dict) -> str:
    """A verifier database with one user and a linked HOTP token; returns the serial."""
    from keyfob.otp import HotpKey
    from keyfob.records import TokenRecord
    from keyfob.serials import make_serial
    from keyfob.verifier import Verifier

    serial = make_serial(99001)
    with Verifier.init(env["KEYFOB_DB"], key_file=env["KEYFOB_KEY_FILE"]) as v:
        v.import_records([TokenRecord(serial, "hotp", "sha1", 6, SEED)])
        v.add_user("bench", "bench password")
        if not v.link("bench", serial, HotpKey(SEED).code(0)).accepted:
            raise RuntimeError("bench: could not link the token")
    return serial


def run() -> list[Row]:
    from keyfob.otp import HotpKey

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "KEYFOB_KEY")}
        env.update(
            PYTHONPYCACHEPREFIX=str(tmp / "pycache"),
            KEYFOB_DB=str(tmp / "v.db"),
            KEYFOB_KEY_FILE=str(tmp / "v.key"),
        )
        env.pop("KEYFOB_ARGON2_PROFILE", None)
        _make_db(tmp, env)
        codes = iter(HotpKey(SEED).codes(1, RUNS + 1))
        kf = _keyfob()
        cmds = {
            "pass": lambda: _wall_ms([sys.executable, "-c", "pass"], env),
            "click": lambda: _wall_ms([sys.executable, "-c", "import click"], env),
            "sqlalchemy": lambda: _wall_ms([sys.executable, "-c", "import sqlalchemy"], env),
            "help": lambda: _wall_ms(kf + ["--help"], env),
            "validate": lambda: _wall_ms(kf + ["validate", "--code-only", "bench", next(codes)], env),
        }
        for fn in cmds.values():  # warm-up: bytecode written, files in the page cache
            fn()
        times = {k: [] for k in cmds}
        for _ in range(RUNS):
            for k, fn in cmds.items():
                times[k].append(fn())
        med = {k: statistics.median(v) for k, v in times.items()}
    base = f"python -c pass, same run: {med['pass']:.0f} ms"
    return [
        Row(
            "start: keyfob --help",
            med["help"],
            "ms",
            f"<= {TARGET_MS:.0f} ms",
            med["help"] <= TARGET_MS,
            med["help"] / med["pass"],
            base + f"; python -c 'import click': {med['click']:.0f} ms",
        ),
        Row(
            "start: keyfob validate --code-only",
            med["validate"],
            "ms",
            f"<= {TARGET_MS:.0f} ms",
            med["validate"] <= TARGET_MS,
            med["validate"] / med["pass"],
            base + f"; python -c 'import sqlalchemy': {med['sqlalchemy']:.0f} ms",
        ),
    ]


def main() -> int:
    from bench.__main__ import print_table

    rows = run()
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
