"""Values as plain Python for JSON and text output."""

from __future__ import annotations

import math
from datetime import datetime


def plain(value):
    """``value`` as plain Python: numpy scalars as numbers, arrays as lists, datetimes as ISO text,
    NaN and infinities as None; anything else unchanged."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy scalars and 0-d arrays
        value = value.item()
    elif hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value
