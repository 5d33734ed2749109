"""Start-up of the command line (issue 11, "Fast enough to be called per login").

Rows: wall time of ``keyfob --help`` and of ``keyfob validate --code-only USER CODE`` (a real user
with a linked HOTP token on a SQLite file made here, every run a fresh code that must be accepted),
each beside ``python -c pass`` measured in the same run; target <= 150 ms. Runs are interleaved
(pass, help, validate, ...) so that the load of a shared machine falls on all three alike; the
median of each is the value. ``python -c "import click"`` and :data:`FLOOR` (click, sqlite3 and
cryptography's AESGCM) are measured the same way and shown beside the rows: the floors of any
command and of a login on a SQLite file (which imports no SQLAlchemy).

Bytecode is cached (in a temporary ``PYTHONPYCACHEPREFIX``, one warm-up run each), as it is for an
installed wheel; the environment's ``PYTHONDONTWRITEBYTECODE`` would otherwise make every run
compile keyfob's own modules.

Wall time on a shared machine swings with its load, so where valgrind is installed each command is
also counted in instructions (callgrind, user space, one run each; steady to a fraction of a percent
whatever the load). Those rows hold keyfob's own share: ``keyfob --help`` against ``import click``
and ``keyfob validate`` against :data:`FLOOR`, the floors neither can go under while it uses
them; target: keyfob adds at most :data:`OWN_SHARE` to its floor. (The 150 ms target itself is
wall time, the rows above.)

Run: ``python -m bench.bench_start`` (or through ``make bench``).
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import Row

TARGET_MS = 150.0
RUNS = 9
#: instruction rows: a command may cost at most this much more than the import it cannot avoid
OWN_SHARE = 1.2
SEED = bytes(range(60, 80))
#: what ``keyfob validate`` cannot go under on a SQLite file: click, the stdlib driver and the
#: seeds' AES-GCM (SQLAlchemy is no longer imported on that path: tests/test_cli_start.py)
FLOOR = "import click, sqlite3; from cryptography.hazmat.primitives.ciphers.aead import AESGCM"


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


def _instructions(argv, env, expect=0) -> float | None:
    """Instructions ``argv`` executes in user space (callgrind), in millions; None without valgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        return None
    proc = subprocess.run(
        [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != expect or found is None:
        raise RuntimeError(f"bench: callgrind {argv[-4:]} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    return int(found.group(1)) / 1e6


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
        codes = iter(HotpKey(SEED).codes(1, RUNS + 2))
        kf = _keyfob()
        cmds = {
            "pass": lambda: _wall_ms([sys.executable, "-c", "pass"], env),
            "click": lambda: _wall_ms([sys.executable, "-c", "import click"], env),
            "floor": lambda: _wall_ms([sys.executable, "-c", FLOOR], env),
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
        ir = {
            "pass": _instructions([sys.executable, "-c", "pass"], env),
            "click": _instructions([sys.executable, "-c", "import click"], env),
            "floor": _instructions([sys.executable, "-c", FLOOR], env),
            "help": _instructions(kf + ["--help"], env),
            "validate": _instructions(kf + ["validate", "--code-only", "bench", next(codes)], env),
        }
    base = f"python -c pass, same run: {med['pass']:.0f} ms"
    rows = [
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
            base + f"; python -c 'import click, sqlite3, AESGCM': {med['floor']:.0f} ms",
        ),
    ]
    if ir["pass"] is not None:
        for name, floor in (("help", "click"), ("validate", "floor")):
            ratio = ir[name] / ir[floor]
            label = "keyfob --help" if name == "help" else "keyfob validate --code-only"
            shown = "click" if name == "help" else "click, sqlite3, AESGCM"
            rows.append(
                Row(
                    f"start: {label}, instructions",
                    ir[name],
                    "M instr",
                    f"<= {OWN_SHARE:g}x import {shown}",
                    ratio <= OWN_SHARE,
                    ratio,
                    f"python -c 'import {shown}': {ir[floor]:,.0f} M; python -c pass: {ir['pass']:,.0f} M (callgrind)",
                )
            )
    return rows


def main() -> int:
    from bench.__main__ import print_table

    rows = run()
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
