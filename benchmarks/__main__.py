"""``python -m benchmarks [NAME ...]``: run the benchmarks (all by default); figures go to
``benchmarks/results/*.json`` and the screen."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("recordings", "models", "similarity", "workers")


def main(argv: list[str]) -> None:
    names = argv or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    for name in names:
        importlib.import_module(f"benchmarks.bench_{name}").main([])


main(sys.argv[1:])
