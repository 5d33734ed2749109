"""``python -m bench.soak`` (``make soak``): the power-cut soaks.

1. 1,000 power cuts on the virtual token at random points of a press (bench/power_cut.py:
   random-time SIGKILLs after the press is sent and exact flash-write cuts), the real firmware
   deployed with mpremote, codes read off the emulated OLED and checked against pyotp.
2. 1,000 cuts at the store level (bench/soak_store.py): many more cuts per minute, straight at
   the LittleFS writes of firmware/store.py.

Prints a summary of each; exits 1 if either found a violation (a soak is a check, unlike the
benchmarks). Takes a few minutes.
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import tempfile
from pathlib import Path

from bench import soak_store
from bench.bench_token import Rig
from bench.power_cut import run_cuts


def token_soak(cuts: int, seed: int, flash_share: float = 0.5, log=None) -> dict:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="soak-token-") as tmp:
        rig = Rig(Path(tmp))
        made = []

        def make_token():
            tok = rig.token()
            made.append(tok)
            return tok

        try:
            # A fresh random OTP seed: the checks map codes to counters, whatever the key.
            return run_cuts(make_token, secrets.token_bytes(20), cuts, rng, flash_share, log=log)
        finally:
            for tok in made:
                tok.close()


def _print(title: str, summary: dict) -> None:
    print(title)
    for key, value in summary.items():
        if key == "violations":
            for v in value:
                print(f"  violation: {v}")
            continue
        print(f"  {key:<20} {value}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    p.add_argument("--cuts", type=int, default=1000, help="power cuts on the virtual token")
    p.add_argument("--store-cuts", type=int, default=1000, help="power cuts at the store level (0: skip)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: a fresh one, printed)")
    p.add_argument("--flash-share", type=float, default=0.5, help="share of exact flash-write cuts")
    args = p.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"soak: seed {seed} (rerun with --seed {seed})", flush=True)
    ok = True
    if args.cuts:
        print(f"soak: {args.cuts} power cuts on the virtual token ...", flush=True)
        s = token_soak(args.cuts, seed, args.flash_share, log=lambda m: print("  " + m, flush=True))
        _print("virtual token, power cuts at random points of a press:", s)
        ok &= s["ok"]
    if args.store_cuts:
        print(f"soak: {args.store_cuts} power cuts at the store level ...", flush=True)
        s = soak_store.run(cuts=args.store_cuts, seed=seed)
        _print("store (firmware/store.py on the virtual flash), cuts at random block writes:", s)
        ok &= s["ok"]
    print("soak:", "no violation" if ok else "VIOLATIONS FOUND")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
