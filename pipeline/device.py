"""Where computation runs: one device resolver and one CPU-thread policy for every stage.

A worker chooses its device once (``--device``) and exports it as ``$PIPELINE_DEVICE``; every
function of ``pipeline/`` that takes ``device=None`` resolves it here, so a worker told ``cpu`` on
a GPU node computes every table on the CPU.

torch starts one intra-op thread per core of the *host*.  In a container limited to 2 CPUs on a
64-core node those 64 threads contend for 2 CPUs and a training step slows several-fold, so a
worker sets the thread count from the CPUs it may actually use (:func:`cpu_limit`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

DEVICE_VARIABLE = "PIPELINE_DEVICE"
"""Environment variable naming the device a worker computes on (``cpu``, ``cuda``, ``cuda:N``, ``auto``)."""

THREADS_VARIABLE = "PIPELINE_THREADS"
"""Environment variable capping torch's intra-op threads (a positive integer)."""


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, else ``$PIPELINE_DEVICE``, else CUDA when available, else the CPU.

    Raises RuntimeError when a CUDA device is asked for and torch finds none.
    """
    name = str(device) if device is not None else os.environ.get(DEVICE_VARIABLE, "auto")
    if name.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(name)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name} requested but CUDA is not available on this machine")
    return resolved


def _cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs granted by the cgroup's CPU quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def cpu_limit(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """How many CPUs this process may use: the smallest of its affinity mask and its cgroup quota (>= 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpus(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads``, else ``$PIPELINE_THREADS``, else to the smaller of
    torch's current count (which honours ``OMP_NUM_THREADS``) and :func:`cpu_limit`.

    Returns the number set.  Raises ValueError for a value that is not a positive integer.
    """
    if threads is None and os.environ.get(THREADS_VARIABLE):
        text = os.environ[THREADS_VARIABLE]
        try:
            threads = int(text)
        except ValueError:
            raise ValueError(f"{THREADS_VARIABLE}={text!r} is not a positive integer") from None
    if threads is None:
        threads = min(torch.get_num_threads(), cpu_limit())
    if int(threads) < 1:
        raise ValueError(f"threads must be a positive integer, got {threads}")
    torch.set_num_threads(int(threads))
    return int(threads)
