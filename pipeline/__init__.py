"""Pure computation of the V1 pipeline: data formats, the simulator, models, training, metrics.

Nothing here imports DataJoint; the tables in ``schemas/`` call into this package.
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

__version__ = "0.1.0"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit of the checkout (``+dirty`` with local changes), if any."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = dirty = ""
    if not commit:
        # an installed copy without .git (the Docker image): the commit its build recorded
        baked = os.environ.get("PIPELINE_GIT_COMMIT", "").strip()
        return f"{__version__}+{baked}" if baked else __version__
    return f"{__version__}+{commit}{'.dirty' if dirty else ''}"
