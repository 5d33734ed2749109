"""Benchmarks and soaks: ``make bench`` (``python -m bench``) and ``make soak`` (``python -m bench.soak``).

See docs/bench.md for what each number measures and how.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    """One measurement: ``value`` in ``unit`` beside its ``target``; ``ok`` says whether it is met.

    ``ratio`` compares the value with a ``baseline`` measured in the same run (None: no baseline).
    """

    name: str
    value: float
    unit: str
    target: str
    ok: bool
    ratio: float | None = None
    baseline: str = ""
