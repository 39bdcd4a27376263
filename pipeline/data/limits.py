"""One import-limit policy for every importer (Sensorium folder and zip, suite2p, NWB, CIFAR, image ``.npz``).

An import reads files a lab did not make itself, so every array's size is taken from its header or
metadata (a ``.npy`` header's shape and dtype, a zip member's declared size, an HDF5 dataset's shape
and dtype) and checked here **before** its bytes are read:

- ``max_array_bytes``: the largest single array (or file) one import may decode;
- ``max_total_bytes``: all arrays of one import together, decoded.  Both default to a quarter of the
  memory available when the limits are made (:func:`available_memory`), at least 256 MiB;
- ``max_expansion``: a compressed container (a zip, an ``.npz``, an HDF5 file) may declare at most
  ``max_expansion`` times its own size plus :data:`EXPANSION_ALLOWANCE` of decoded data, whatever
  the machine: a 2 MB file that declares gigabytes is a compression bomb, not a recording.

Each array is read once, into a buffer of its declared size (zip members are never inflated past
what they declare), so the decoded data of an import stays within ``max_total_bytes`` and the
importers' temporary copies keep the peak within about three times that (docs/own_recordings.md).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Mapping

import numpy as np

MiB = 2**20
GiB = 2**30
MEMORY_FRACTION = 0.25
"""Share of the available memory one import may decode by default."""
MIN_DEFAULT_BYTES = 256 * MiB
EXPANSION_ALLOWANCE = 64 * MiB
"""Decoded bytes a container may declare beyond ``max_expansion`` times its size (small files of zeros)."""
ENV_ARRAY = "PIPELINE_IMPORT_MAX_FILE_MB"
ENV_TOTAL = "PIPELINE_IMPORT_MAX_GB"
ENV_EXPANSION = "PIPELINE_IMPORT_MAX_EXPANSION"

ErrorFactory = Callable[[str], Exception]
"""Turns a problem (one line) into the importer's own error, which names the file and the object."""


def available_memory() -> int:
    """Bytes of memory available to a new allocation now: psutil's ``available`` when installed, else
    the kernel's ``MemAvailable``, else free pages (``os.sysconf``)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


@dataclasses.dataclass(frozen=True)
class ImportLimits:
    """Bounds on what one import may decode (bytes), checked from headers before reading; see the module."""

    max_array_bytes: int
    max_total_bytes: int
    max_expansion: float = 100.0

    def __post_init__(self) -> None:
        for name in ("max_array_bytes", "max_total_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"ImportLimits.{name}: expected a positive number of bytes, got {value!r}")
        if not (isinstance(self.max_expansion, (int, float)) and self.max_expansion >= 1):
            raise ValueError(f"ImportLimits.max_expansion: expected a number >= 1, got {self.max_expansion!r}")

    @classmethod
    def for_machine(cls, memory: int | None = None) -> ImportLimits:
        """Defaults from the machine: :data:`MEMORY_FRACTION` of ``memory`` (default: available now)."""
        budget = max(int(MEMORY_FRACTION * (available_memory() if memory is None else memory)), MIN_DEFAULT_BYTES)
        return cls(max_array_bytes=budget, max_total_bytes=budget)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ImportLimits:
        """Machine defaults, overridden by ``PIPELINE_IMPORT_MAX_FILE_MB`` (largest array, MiB),
        ``PIPELINE_IMPORT_MAX_GB`` (all arrays, GiB) and ``PIPELINE_IMPORT_MAX_EXPANSION``.
        Raises ValueError naming the variable when a value is not a positive number."""
        environ = os.environ if environ is None else environ
        defaults = cls.for_machine()
        values: dict[str, float] = {}
        for var, field, unit in (
            (ENV_ARRAY, "max_array_bytes", MiB),
            (ENV_TOTAL, "max_total_bytes", GiB),
            (ENV_EXPANSION, "max_expansion", 1),
        ):
            text = environ.get(var)
            if text is None:
                continue
            try:
                number = float(text)
            except ValueError:
                number = float("nan")
            least = 1.0 if field == "max_expansion" else 0.0
            if not (np.isfinite(number) and number > 0 and number >= least):
                raise ValueError(f"{var}={text!r}: expected a positive number" + (" >= 1" if least else ""))
            values[field] = number if unit == 1 else max(1, int(number * unit))
        return dataclasses.replace(defaults, **values)  # type: ignore[arg-type]


def size(nbytes: float) -> str:
    """Bytes for messages: ``'12 KiB'``, ``'400 MiB'``, ``'2.0 GiB'``."""
    if nbytes >= GiB:
        return f"{nbytes / GiB:.1f} GiB"
    return f"{nbytes / MiB:.0f} MiB" if nbytes >= MiB else f"{nbytes / 1024:.0f} KiB"


class Budget:
    """What one import has decoded so far, against its :class:`ImportLimits`."""

    def __init__(self, limits: ImportLimits | None = None):
        self.limits = limits or ImportLimits.for_machine()
        self.decoded = 0

    def charge(self, nbytes: int, error: ErrorFactory, total: int | None = None) -> None:
        """Count ``nbytes`` about to be decoded (``total`` of them towards the import's total, default
        all); raise ``error(problem)`` past a limit (nothing counted then)."""
        limits = self.limits
        total = nbytes if total is None else total
        if nbytes > limits.max_array_bytes:
            raise error(
                f"{size(nbytes)} decoded exceeds the import limit of {size(limits.max_array_bytes)} per array "
                f"({ENV_ARRAY})"
            )
        if self.decoded + total > limits.max_total_bytes:
            raise error(
                f"the import's arrays exceed the import limit of {size(limits.max_total_bytes)} decoded in all "
                f"({ENV_TOTAL})"
            )
        self.decoded += total

    def check_expansion(self, declared: int, stored: int, error: ErrorFactory) -> None:
        """Refuse a container of ``stored`` bytes that declares ``declared`` decoded bytes beyond
        ``max_expansion`` times its size plus :data:`EXPANSION_ALLOWANCE`."""
        allowed = self.limits.max_expansion * stored + EXPANSION_ALLOWANCE
        if declared > allowed:
            raise error(
                f"declares {size(declared)} decoded in a file of {size(stored)}, over the import limit of "
                f"{self.limits.max_expansion:g} times the file's size plus {size(EXPANSION_ALLOWANCE)} "
                f"({ENV_EXPANSION}): a compression bomb"
            )


def nbytes_of(shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Decoded bytes of an array of ``shape`` and ``dtype`` (exact integers: no overflow)."""
    count = 1
    for n in shape:
        count *= int(n)
    return count * int(np.dtype(dtype).itemsize)
