"""Saving a long training now and then, so that an interrupted run resumes where it stood.

A training function takes a :class:`Checkpointer`.  It asks :meth:`Checkpointer.resume` once for the
state of an earlier, interrupted run of the same job, and offers its state after every step to
:meth:`Checkpointer.maybe_save`, which saves it when the :class:`CheckpointSchedule` says so (every
``minutes`` of wall time, or every ``steps`` steps).  Where the state goes is the caller's: a
:class:`CheckpointStore` with ``load()`` and ``save(data, step)`` of bytes (the database's checkpoint
table in a worker, a dict in the tests), so this package never sees DataJoint.

A state is a nested dict of tensors and plain values (numbers, strings, None, lists, dicts), written
with ``torch.save`` and read back with ``torch.load(weights_only=True)``: torch's restricted unpickler,
which builds tensors and containers and refuses any other object.

For the resumed result to equal an uninterrupted run's, a state holds everything a step depends on:
weights, optimizer moments, learning-rate schedule, early-stopping state and best weights, history,
and every random generator, including where the batch order of the current epoch stands.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import time
from typing import Callable, Mapping, Protocol

import numpy as np
import torch

from pipeline.config import ConfigError

log = logging.getLogger(__name__)

MINUTES_VARIABLE = "PIPELINE_CHECKPOINT_MINUTES"
"""Environment variable: minutes of training between checkpoints (0 turns checkpoints off)."""
STEPS_VARIABLE = "PIPELINE_CHECKPOINT_STEPS"
"""Environment variable: save every this many steps instead (tests, which cannot wait minutes)."""
DEFAULT_MINUTES = 10.0


class CheckpointStore(Protocol):
    """Where one job's latest checkpoint lives."""

    def load(self) -> bytes | None:
        """The latest saved state, None when there is none."""
        ...

    def save(self, data: bytes, step: int) -> None:
        """Replace the saved state by ``data``, taken after ``step`` steps (atomically: a save cut short
        leaves the previous one)."""
        ...


@dataclasses.dataclass(frozen=True)
class CheckpointSchedule:
    """When to save: every ``minutes`` of wall time, or every ``steps`` steps; neither set: never."""

    minutes: float | None = DEFAULT_MINUTES
    steps: int | None = None

    def __post_init__(self) -> None:
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise ConfigError(f"checkpoint minutes must be a positive number, got {self.minutes}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"checkpoint steps must be >= 1, got {self.steps}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CheckpointSchedule:
        """The schedule that :data:`MINUTES_VARIABLE` and :data:`STEPS_VARIABLE` set (steps win)."""
        steps = environ.get(STEPS_VARIABLE, "").strip()
        if steps:
            if not steps.isdigit() or int(steps) < 1:
                raise ConfigError(f"{STEPS_VARIABLE}={steps!r}: give a whole number of steps >= 1")
            return cls(minutes=None, steps=int(steps))
        text = environ.get(MINUTES_VARIABLE, "").strip()
        if not text:
            return cls()
        try:
            minutes = float(text)
        except ValueError:
            minutes = float("nan")
        if not (math.isfinite(minutes) and minutes >= 0):
            raise ConfigError(f"{MINUTES_VARIABLE}={text!r}: give minutes as a number >= 0 (0: no checkpoints)")
        return cls(minutes=minutes or None)


def pack(state: dict) -> bytes:
    """``state`` (tensors and plain values) as bytes; numpy arrays are stored as tensors."""
    buffer = io.BytesIO()
    torch.save(_tensors(state), buffer)
    return buffer.getvalue()


def unpack(data: bytes) -> dict:
    """A state written by :func:`pack`, its tensors on the CPU; refuses anything but tensors and plain values."""
    return torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)


def _tensors(value):
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _tensors(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_tensors(v) for v in value]
    return value


def rng_state() -> dict:
    """torch's global random state (and CUDA's, where CUDA is in use)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Saves a training's state to ``store`` on ``schedule`` and gives it back to a resumed run.

    Without a store it never saves and has nothing to resume (the default of every training function).
    ``clock`` : seconds, monotonic (replaceable in tests).
    """

    def __init__(
        self,
        store: CheckpointStore | None = None,
        schedule: CheckpointSchedule = CheckpointSchedule(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.schedule = schedule
        self.clock = clock
        self.last_step = 0
        self.last_time = clock()
        self.saves = 0

    def resume(self) -> dict | None:
        """The state of the latest checkpoint, None when the run starts afresh."""
        data = self.store.load() if self.store is not None else None
        if data is None:
            return None
        state = unpack(data)
        self.last_step, self.last_time = int(state["step"]), self.clock()
        log.info("resuming from the checkpoint at step %d", self.last_step)
        return state

    def due(self, step: int) -> bool:
        """Whether the state after ``step`` steps is to be saved."""
        if self.store is None or step <= self.last_step:
            return False
        every = self.schedule
        if every.steps is not None:
            return step - self.last_step >= every.steps
        return every.minutes is not None and self.clock() - self.last_time >= 60 * every.minutes

    def maybe_save(self, step: int, state: Callable[[], dict]) -> bool:
        """Save ``state()`` (built only when due) after ``step`` steps if the schedule says so."""
        if not self.due(step):
            return False
        assert self.store is not None  # due() is False without one
        self.store.save(pack(dict(state(), step=step)), step)
        self.last_step, self.last_time = step, self.clock()
        self.saves += 1
        log.info("checkpoint saved at step %d", step)
        return True
