"""Soak the token's HOTP counter store with power cuts at random flash writes.

Each run is a fresh MicroPython unix process (one power-up of the virtual token): it mounts a LittleFS v2
image through the virtual flash (boards/sim/hw/flash.py), loads firmware/store.py's state, then reserves
HOTP counters and prints each one *after* the reservation returned (= a code shown on the display) until
the flash device kills the process in the middle of a block write (KEYFOB_SIM_CUT_AFTER_WRITES). The next
run checks what survived: the image mounts, the token is still provisioned with the same seed, every
printed counter is used up (never shown again, RFC 4226 requires a counter never to repeat), and at most
one counter value was skipped by the cut.

``run(cuts=1000)`` returns a summary dict; ``python -m bench.soak_store`` prints it.
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware"
SIM_HW = REPO / "boards" / "sim" / "hw"

_MOUNTS = {
    "lfs2": "bd = flash.mount(IMG, '/flash', block_count=32)\n",
    # FAT replaces files in place: a cut can leave a torn record, which the store must survive on its own.
    "fat": (
        "import vfs\n"
        "bd = flash.FileBlockDev(IMG, block_size=512, block_count=256)\n"
        "if bd.created:\n    vfs.VfsFat.mkfs(bd)\n"
        "vfs.mount(vfs.VfsFat(bd), '/flash')\nbd.reformatted = False\n"
    ),
}

_WORKER = """\
import sys, binascii, hashlib, flash, store
IMG = sys.argv[1]
%s
s = store.Store('/flash')
if sys.argv[2] != '-':
    s.provision(binascii.unhexlify(sys.argv[2]), 'KF000123454', counter=1000)
h = binascii.hexlify(hashlib.sha256(s.seed).digest()).decode()
print('LOADED %%d %%d %%d %%s' %% (bd.reformatted, s.provisioned, s.counter, h))
for _ in range(int(sys.argv[3])):
    c = s.reserve_next_counter()
    print('SHOWN %%d' %% c)
print('DONE')
"""


def _micropython() -> str:
    here = Path(sys.executable).parent / "micropython"
    return str(here) if here.exists() else "micropython"


def _parse(out: str):
    loaded = None
    shown = []
    for line in out.splitlines():
        parts = line.split()
        if parts[:1] == ["LOADED"] and len(parts) == 5:
            loaded = (int(parts[1]), int(parts[2]), int(parts[3]), parts[4])
        elif parts[:1] == ["SHOWN"]:
            shown.append(int(parts[1]))
    return loaded, shown, "DONE" in out.splitlines()


def run(cuts: int = 1000, seed: int = 1, fs: str = "lfs2", max_cut_writes: int = 30) -> dict:
    """Cut power ``cuts`` times at a random block write (0..max_cut_writes-1 writes after power-up).

    Returns counts and the violations found: ``ok`` is true when no code could be shown twice and the
    token was never lost. ``stopped`` says why a soak ended before ``cuts`` (a full filesystem).
    """
    rnd = random.Random(seed)
    secret = secrets.token_bytes(20)
    secret_sha = hashlib.sha256(secret).hexdigest()
    violations: list[str] = []
    stopped = None
    done_cuts = runs = shown_total = skipped = not_cut = 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="soak-store-") as tmp:
        script = Path(tmp) / "worker.py"
        script.write_text(_WORKER % _MOUNTS[fs])
        img = str(Path(tmp) / "flash.img")
        base_env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(FIRMWARE), str(SIM_HW), ".frozen"]))
        base_env.pop("KEYFOB_SIM_CUT_AFTER_WRITES", None)
        base_env.pop("KEYFOB_SIM_CUT_BYTES", None)

        def power_up(provision: bool, limit: int, env: dict | None = None):
            proc = subprocess.run(
                [_micropython(), str(script), img, secret.hex() if provision else "-", str(limit)],
                env=dict(base_env, **(env or {})),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                cwd=tmp,
            )
            return proc.returncode, proc.stdout

        rc, out = power_up(True, 0)
        loaded, _, _ = _parse(out)
        if rc != 0 or loaded is None:
            raise RuntimeError(f"provisioning run failed ({rc}): {out[-500:]}")
        base = loaded[2]
        prev_shown: list[int] = []
        last_shown = -1
        while True:
            final = done_cuts >= cuts
            env = None
            if not final:
                env = {"KEYFOB_SIM_CUT_AFTER_WRITES": str(rnd.randrange(max_cut_writes))}
                cut_bytes = rnd.choice([None, None, "0", "1", str(rnd.randrange(2, 4096))])
                if cut_bytes is not None:
                    env["KEYFOB_SIM_CUT_BYTES"] = cut_bytes
            rc, out = power_up(False, 0 if final else 10_000, env)
            runs += 1
            loaded, shown, done = _parse(out)
            label = f"run {runs}"
            if loaded is None:
                violations.append(f"{label}: store did not load (rc {rc}): {out[-300:]}")
                break
            reformatted, provisioned, counter, sha = loaded
            if reformatted or not provisioned or sha != secret_sha:
                violations.append(f"{label}: token lost (reformatted={reformatted} provisioned={provisioned})")
                break
            low = base + len(prev_shown)
            if counter < low:
                violations.append(f"{label}: counter {counter} <= a counter already shown ({low - 1})")
            elif counter > low + 1:
                violations.append(f"{label}: counter jumped from {low} to {counter}")
            skipped += max(0, counter - low)
            if final:
                if rc != 0 or not done:
                    violations.append(f"{label}: final check run failed (rc {rc})")
                break
            if shown and (shown[0] <= last_shown or shown != list(range(counter, counter + len(shown)))):
                violations.append(f"{label}: shown counters repeat or are not consecutive")
            if shown:
                last_shown = shown[-1]
            shown_total += len(shown)
            if rc == -9 and not done:
                done_cuts += 1
            elif rc == 0 and done:
                not_cut += 1
            elif rc == 1 and "OSError: 28" in out:
                # The store refused to hand out a counter (so no code was shown): no room left.
                # FAT loses clusters at power cuts and fills up; LittleFS does not.
                stopped = f"filesystem full after {done_cuts} cuts"
                break
            else:
                violations.append(f"{label}: unexpected exit {rc}: {out[-300:]}")
                break
            base, prev_shown = counter, shown
    seconds = time.perf_counter() - start
    return {
        "fs": fs,
        "cuts": done_cuts,
        "power_ups": runs + 1,
        "codes_shown": shown_total,
        "counters_skipped": skipped,
        "runs_not_cut": not_cut,
        "violations": violations[:20],
        "violation_count": len(violations),
        "stopped": stopped,
        "ok": not violations,
        "seconds": round(seconds, 1),
        "ms_per_power_up": round(1000 * seconds / (runs + 1), 1),
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fs", choices=sorted(_MOUNTS), default="lfs2")
    args = parser.parse_args()
    summary = run(cuts=args.cuts, seed=args.seed, fs=args.fs)
    for key, value in summary.items():
        print(f"{key:<18} {value}")
    sys.exit(0 if summary["ok"] else 1)
