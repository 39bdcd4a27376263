"""Progress bars that draw only where someone watches: on a terminal or in a notebook.

Workers, SLURM jobs and containers write to files or pipes, where a bar's carriage returns and
control codes would fill the log; there the bar is off and the workers' own log lines remain.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """``tqdm(iterable, **kwargs)``, drawn only when ``enabled`` and its output is a terminal.

    ``disable=None`` is tqdm's own "off unless the file is a TTY"; its notebook flavour (picked by
    ``tqdm.auto`` inside Jupyter) draws a widget instead.
    """
    return tqdm(iterable, disable=None if enabled else True, **kwargs)


def on_terminal() -> bool:
    """Whether standard error is an interactive terminal (for libraries that take a bool, e.g.
    DataJoint's ``populate(display_progress=...)``)."""
    return bool(getattr(sys.stderr, "isatty", None) and sys.stderr.isatty())
