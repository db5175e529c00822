"""Exceptions raised by the federation protocols.

``RoundAbortedError`` is the one a round runner catches: this round could not combine
with its group, and the member goes on with its own model. The grouping errors derive
from ``ValueError`` so a caller that only wants "bad input" can catch that.
"""

from __future__ import annotations


class GroupingError(ValueError):
    """Base class for errors raised by the grouping modules."""


class GroupSizeError(GroupingError):
    """``group_size`` is below 3: in a group of two the average reveals the other's update."""


class GroupMessageError(GroupingError):
    """A group-agreement message is malformed: bad JSON, wrong fields, or inconsistent."""


class WeightError(GroupingError):
    """Vectors or weights given to a weighted average are empty, mismatched or not finite."""


class StalenessError(GroupingError):
    """A staleness query names a last-aggregated round later than the current round."""


class RoundAbortedError(Exception):
    """A round could not combine with its group (too few members, deadline, bad result).

    The member keeps the model local training made and goes on to the next round.
    """


class SettingsMismatchError(RoundAbortedError):
    """Group members disagree on a ``[federation]`` setting that changes what the
    averaged vector means (``federation/averaging/agreement.py``); the average is
    not applied."""
