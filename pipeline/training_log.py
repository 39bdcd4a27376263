"""Plain log lines of a training's progress: step, loss, validation score, steps per second.

Workers write to files, where progress bars are off (:mod:`pipeline.progress`); these lines are what
an operator reads there, and ``report`` hands each line on (a worker stores the latest for
``python -m populate status``).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Callable, Mapping

from pipeline.config import ConfigError

log = logging.getLogger(__name__)

SECONDS_VARIABLE = "PIPELINE_PROGRESS_SECONDS"
"""Environment variable: seconds between progress lines."""
STEPS_VARIABLE = "PIPELINE_PROGRESS_STEPS"
"""Environment variable: a progress line every this many steps instead."""
DEFAULT_SECONDS = 60.0


class ProgressLog:
    """Logs ``what: step s/total, name value, ..., r it/s`` every ``every_steps`` steps if given, else
    every ``every_seconds`` seconds, and passes each line to ``report`` (``total``: given here or to
    :meth:`start`)."""

    def __init__(
        self,
        what: str,
        total: int | None = None,
        every_seconds: float = DEFAULT_SECONDS,
        every_steps: int | None = None,
        report: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not every_seconds > 0 or (every_steps is not None and every_steps < 1):
            raise ConfigError(f"progress every {every_seconds} s / {every_steps} steps: both must be positive")
        self.what, self.total = what, total
        self.every_seconds, self.every_steps = every_seconds, every_steps
        self.report = report
        self.clock = clock
        self.start(0)

    @classmethod
    def from_env(
        cls, what: str, total: int | None = None, environ: Mapping[str, str] = os.environ, **kwargs
    ) -> ProgressLog:
        """A log with the intervals of :data:`SECONDS_VARIABLE` and :data:`STEPS_VARIABLE`."""
        seconds, steps = environ.get(SECONDS_VARIABLE, "").strip(), environ.get(STEPS_VARIABLE, "").strip()
        try:
            every_seconds = float(seconds) if seconds else DEFAULT_SECONDS
        except ValueError:
            every_seconds = float("nan")
        if not (math.isfinite(every_seconds) and every_seconds > 0):
            raise ConfigError(f"{SECONDS_VARIABLE}={seconds!r}: give a positive number of seconds")
        if steps and (not steps.isdigit() or int(steps) < 1):
            raise ConfigError(f"{STEPS_VARIABLE}={steps!r}: give a whole number of steps >= 1")
        return cls(what, total, every_seconds, int(steps) if steps else None, **kwargs)

    def start(self, step: int, total: int | None = None) -> None:
        """The run starts (or resumes) at ``step``, of ``total`` steps at most (if given)."""
        self.last_step, self.last_time = step, self.clock()
        self.total = total if total is not None else self.total

    def update(self, step: int, **values: float | None) -> str | None:
        """After ``step`` steps: the line written if one is due, else None.  ``values`` in the order given;
        None prints as ``-``."""
        now = self.clock()
        if self.every_steps is not None:
            if step - self.last_step < self.every_steps:
                return None
        elif now - self.last_time < self.every_seconds:
            return None
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        shown = ", ".join(f"{name} {'-' if v is None else format(v, '.4g')}" for name, v in values.items())
        of = "" if self.total is None else f"/{self.total}"
        line = f"{self.what}: step {step}{of}, {shown}, {rate:.3g} it/s"
        self.last_step, self.last_time = step, now
        log.info("%s", line)
        if self.report is not None:
            self.report(line)
        return line
