"""A few values at the end of the averaged vector that prove the group agreed on settings.

Some ``[federation]`` settings change what the averaged vector *means* without always
changing its length: frozen-A LoRA sends B only (for square layers, B plus exp_avg is
exactly as long as A plus B), and group momentum changes what a member does with the
average. A member that disagrees would then be averaged in silently. So each member
appends ``MARKER_SIZE`` values drawn from a hash of those settings: when every member
sends the same values, their weighted average returns them (to the quantisation grid);
when one differs, the average moves away from every member's own values. The marker
travels inside the vector, so secure aggregation carries and checks it like the rest,
and it reveals only the settings, which every member must share anyway.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import SettingsMismatchError

MARKER_SIZE = 4
MARKER_RANGE = 0.5  # well inside secure aggregation's default clip of [-1, 1]
# Secure aggregation's grid is far finer; a single member's different marker among
# a hundred still moves the average by more than this.
MARKER_TOLERANCE = 1e-4


def settings_marker(description: str) -> np.ndarray:
    """``MARKER_SIZE`` values in ``[-MARKER_RANGE, MARKER_RANGE]`` determined by ``description``."""
    digest = hashlib.sha256(description.encode("utf-8")).digest()
    words = np.frombuffer(digest[: 4 * MARKER_SIZE], dtype="<u4").astype(np.float64)
    return ((words / float(2**32 - 1)) * 2.0 - 1.0).astype(np.float32) * MARKER_RANGE


def with_marker(vector: np.ndarray, description: str) -> np.ndarray:
    """``vector`` followed by the marker of ``description``."""
    return np.concatenate([vector, settings_marker(description)]).astype(np.float32, copy=False)


def strip_marker(average: np.ndarray, description: str) -> np.ndarray:
    """The averaged vector without its marker; ``SettingsMismatchError`` if the group's
    marker is not ours (some member averaged with other settings)."""
    if average.shape[0] < MARKER_SIZE:
        raise SettingsMismatchError("the group's average is shorter than its settings marker")
    ours = settings_marker(description)
    theirs = np.asarray(average[-MARKER_SIZE:], dtype=np.float32)
    if not np.all(np.abs(theirs - ours) <= MARKER_TOLERANCE):
        raise SettingsMismatchError(
            f"group members disagree on [federation] settings (ours: {description}); "
            "the average was not applied: set the same values on every member")
    return average[:-MARKER_SIZE]
