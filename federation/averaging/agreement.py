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
MARKER_RANGE = 1.0 / 64.0
"""Small on purpose: protocol v3 sizes its grid for the group's largest |value| (its range
shift), and a marker larger than the adapter's own values would coarsen every
coordinate's grid. LoRA A starts within 1/sqrt(in_features) (1/64 at 4096 features, 1/8
for the demo model), so a marker within 1/64 leaves the grid as the adapter sets it.
A member of weight share w with other settings moves the marker by w times the
difference of two markers (up to 2/64 per value); the check sees it when that exceeds
twice the average's error bound (v3 at k = 8: ~3e-5 for an adapter within 1/8, so
w >= ~1 %; ~2.5e-4 if some member's values reach the clip)."""
MARKER_FLOOR = 1e-6
"""Tolerance with an exact average (plain averaging: float32 rounding of values ~4e-3 is
~1e-9). Secure aggregation adds twice its stated per-coordinate error bound."""


def settings_marker(description: str) -> np.ndarray:
    """``MARKER_SIZE`` values in ``[-MARKER_RANGE, MARKER_RANGE]`` determined by ``description``."""
    digest = hashlib.sha256(description.encode("utf-8")).digest()
    words = np.frombuffer(digest[: 4 * MARKER_SIZE], dtype="<u4").astype(np.float64)
    return ((words / float(2**32 - 1)) * 2.0 - 1.0).astype(np.float32) * MARKER_RANGE


def with_marker(vector: np.ndarray, description: str) -> np.ndarray:
    """``vector`` followed by the marker of ``description``."""
    return np.concatenate([vector, settings_marker(description)]).astype(np.float32, copy=False)


def strip_marker(average: np.ndarray, description: str, error_bound: float = 0.0) -> np.ndarray:
    """The averaged vector without its marker; ``SettingsMismatchError`` if the group's
    marker is not ours (some member averaged with other settings).

    ``error_bound`` is the average's stated per-coordinate error (``GroupAverage``): the
    marker may be off by that much on the quantisation grid and still be ours."""
    if average.shape[0] < MARKER_SIZE:
        raise SettingsMismatchError("the group's average is shorter than its settings marker")
    ours = settings_marker(description)
    theirs = np.asarray(average[-MARKER_SIZE:], dtype=np.float32)
    tolerance = MARKER_FLOOR + 2.0 * max(error_bound, 0.0)
    if not np.all(np.abs(theirs - ours) <= tolerance):
        raise SettingsMismatchError(
            f"group members disagree on [federation] settings (ours: {description}); "
            "the average was not applied: set the same values on every member")
    return average[:-MARKER_SIZE]
