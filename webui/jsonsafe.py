"""Turn what a ``DaemonView`` returns into strictly valid JSON.

Python's ``json`` writes ``NaN`` and ``Infinity`` for non-finite floats, which
browsers' ``JSON.parse`` rejects: one diverged loss would blank the whole
dashboard. Non-finite numbers become ``null``; unknown objects become strings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def to_json_safe(value: Any) -> Any:
    """A copy of ``value`` made only of dict/list/str/int/finite float/bool/None."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): to_json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_safe(item) for item in value]
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def dumps(value: Any) -> str:
    """Strict JSON text for ``value`` (never ``NaN``)."""
    return json.dumps(to_json_safe(value), allow_nan=False, separators=(",", ":"))
