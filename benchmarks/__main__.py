"""``python -m benchmarks [NAME ...]``: run the benchmarks (all by default); figures go to
``benchmarks/results/*.json`` and the screen.

Each benchmark runs in its own process: the schema modules bind their tables to the schema prefix
when first imported, and every benchmark declares the pipeline under a throw-away prefix of its own.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = ("recordings", "models", "similarity", "workers", "suite2p")


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    failed = [
        name for name in names if subprocess.run([sys.executable, "-m", f"benchmarks.bench_{name}"]).returncode != 0
    ]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


sys.exit(main(sys.argv[1:]))
