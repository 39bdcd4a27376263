"""A worker's settings that the command line needs before DataJoint is imported, and its device.

:func:`device_spec` parses ``--device``; :func:`use_device` makes it the device of the process's
makes and :func:`pipeline.device.configure_threads` sets the torch threads (see
``docs/portability.md``).
"""

from __future__ import annotations

import argparse
import os
import re

DEFAULT_HEARTBEAT_S = 5.0
DEFAULT_POLL_S = 10.0
DEFAULT_STOP_TIMEOUT_S = 10.0
DEFAULT_BATCH = 8
DEFAULT_START_TIMEOUT_S = 300.0
"""How long a starting worker waits for a server it has not reached yet (a database starting beside it)."""


class WorkerError(RuntimeError):
    """The worker cannot start with the settings given."""


def check_settings(
    error: type[Exception],
    *,
    positive: dict | None = None,
    non_negative: dict | None = None,
    at_least_one: dict | None = None,
) -> None:
    """Raise ``error`` naming the first setting (name -> value; None means unset) out of its range."""
    for rule, values, ok in (
        ("must be positive", positive, lambda v: v > 0),
        ("must not be negative", non_negative, lambda v: v >= 0),
        ("must be at least 1", at_least_one, lambda v: v >= 1),
    ):
        for name, value in (values or {}).items():
            if value is not None and not ok(value):
                raise error(f"{name} {rule}, got {value}")


_DEVICE = re.compile(r"cpu|auto|cuda(:\d+)?")  # matched whole (fullmatch)


def device_spec(text: str) -> str:
    """argparse type of ``--device``: ``cpu``, ``auto``, ``cuda`` or ``cuda:N``."""
    value = text.strip().lower()
    if not _DEVICE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, auto, cuda or cuda:N")
    return value


def use_device(spec: str | None) -> str | None:
    """Make ``spec`` the device of this process's makes; return the device chosen.

    Exports it as ``PIPELINE_DEVICE``, which :func:`pipeline.device.resolve_device` reads in every
    make, and, for a CUDA device, makes it torch's current device.  ``auto`` picks ``cuda:0`` (the
    first visible GPU) when CUDA is available, else ``cpu``.  None leaves the environment as it is.
    """
    from pipeline.device import DEVICE_VARIABLE, resolve_device

    if spec is None:
        return os.environ.get(DEVICE_VARIABLE)
    try:
        device = resolve_device(spec)
    except RuntimeError as error:
        raise WorkerError(f"--device {spec}: {error}") from None
    name = "cpu"
    if device.type == "cuda":
        import torch

        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise WorkerError(
                f"--device {spec}: only {torch.cuda.device_count()} GPU(s) visible "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
            )
        torch.cuda.set_device(index)
        name = f"cuda:{index}"
    os.environ[DEVICE_VARIABLE] = name
    return name
