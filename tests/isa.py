"""Which CPU instruction set torch's kernels use, and a lower one to rerun the kernel tests under.

oneDNN (convolutions) honours ``ONEDNN_MAX_CPU_ISA`` and ATen's own vectorised kernels honour
``ATEN_CPU_CAPABILITY``; together they make this machine take the kernels of an older CPU.

    python -m tests.isa describe   # one line: the oneDNN ISA and ATen capability in effect
    python -m tests.isa lower      # the environment assignments for the next lower ISA ('' if none)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

_PROBE = (
    "import torch, torch.nn.functional as F\n"
    "F.conv2d(torch.rand(2, 3, 8, 8), torch.rand(4, 3, 3, 3))\n"
    "print('aten:' + torch.backends.cpu.get_cpu_capability(), flush=True)\n"
)

# From the machine's best oneDNN ISA to the (oneDNN, ATen) pair one generation below it.
_LOWER = (
    (re.compile(r"AVX[- ]?512|AVX 10|AMX", re.I), ("AVX2", "avx2")),
    (re.compile(r"AVX2", re.I), ("AVX", "default")),
    (re.compile(r"\bAVX\b", re.I), ("SSE41", "default")),
)


def in_effect(env: dict | None = None) -> tuple[str, str]:
    """(oneDNN ISA, ATen capability) that torch uses under ``env`` (default: this environment)."""
    run_env = dict(os.environ if env is None else env, ONEDNN_VERBOSE="1")
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, env=run_env, timeout=120)
    onednn = re.search(r"isa:([^\n,]+)", out.stdout + out.stderr)
    aten = re.search(r"aten:(\S+)", out.stdout)
    return (onednn.group(1).strip() if onednn else "unknown", aten.group(1) if aten else "unknown")


def lower_assignments() -> str:
    """``ONEDNN_MAX_CPU_ISA=... ATEN_CPU_CAPABILITY=...`` one step below the best ISA; '' if none is lower."""
    best, _ = in_effect({k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")})
    for pattern, (onednn, aten) in _LOWER:
        if pattern.search(best):
            return f"ONEDNN_MAX_CPU_ISA={onednn} ATEN_CPU_CAPABILITY={aten}"
    return ""


def describe() -> str:
    onednn, aten = in_effect()
    return f"torch kernels: oneDNN ISA {onednn}, ATen CPU capability {aten}"


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "describe"
    if command == "lower":
        print(lower_assignments())
    elif command == "describe":
        print(describe())
    else:
        sys.exit(f"usage: python -m tests.isa describe|lower (got {command!r})")
