"""``python -m bench`` (``make bench``): every benchmark, one table.

Each row: the measurement, its target, the ratio against a baseline measured in the same run,
and OK or MISS. Misses are printed as misses; the exit code is 0 even then (benchmarks report,
they do not fail CI). Only a benchmark that could not run at all gives a non-zero exit.
"""

from __future__ import annotations

import sys
import time
import traceback

from bench import Row


def _verifier_rows() -> list[Row]:
    from bench import bench_verifier

    rows = []
    for name, value, unit, target, ratio, ok in bench_verifier.run():
        # bench_verifier says in its target text what the ratio is against (pyotp or the target)
        target, _, against = target.partition(" (ratio: ")
        baseline = against.rstrip(")") if against else "pyotp, same run"
        rows.append(Row(name, value, unit, target, bool(ok), ratio, baseline))
    return rows


def _token_rows() -> list[Row]:
    from bench import bench_token

    return bench_token.run(log=lambda m: print("  " + m, file=sys.stderr, flush=True))


def _radius_rows() -> list[Row]:
    from bench import bench_radius

    return bench_radius.run()


def _http_rows() -> list[Row]:
    from bench import bench_http

    return bench_http.run()


def _start_rows() -> list[Row]:
    from bench import bench_start

    return bench_start.run()


GROUPS = (
    ("token", _token_rows),
    ("verifier", _verifier_rows),
    ("radius", _radius_rows),
    ("http", _http_rows),
    ("start", _start_rows),
)


def _fmt(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def print_table(rows: list[Row], out=None) -> None:
    out = out or sys.stdout
    nw = max([len(r.name) for r in rows] + [11])
    tw = max([len(r.target) for r in rows] + [6])
    print(
        f"{'measurement':<{nw}}  {'value':>10} {'unit':<13} {'target':<{tw}}  {'ratio':>7}  result  baseline", file=out
    )
    print("-" * (nw + tw + 60), file=out)
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        print(
            f"{r.name:<{nw}}  {_fmt(r.value):>10} {r.unit:<13} {r.target:<{tw}}  {ratio:>7}  "
            f"{'OK' if r.ok else 'MISS':<6}  {r.baseline}",
            file=out,
        )


def main() -> int:
    rows: list[Row] = []
    failed = []
    for name, fn in GROUPS:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            rows.extend(fn())
        except Exception:  # noqa: BLE001 - report the others, then fail
            failed.append(name)
            traceback.print_exc()
        print(f"bench: {name} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    sys.stderr.flush()
    print()
    if rows:
        print_table(rows)
    misses = [r for r in rows if not r.ok]
    print()
    print(
        f"{len(rows)} measurements, {len(rows) - len(misses)} OK, {len(misses)} MISS"
        + (f"; could not run: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
