"""Exceptions raised by group planning, group agreement and weighted averaging.

They live in their own module (rather than ``errors.py``) so that grouping stays a
pure, dependency-free part of the daemon; each still derives from ``ValueError`` so a
caller that only wants "bad input" can catch that.
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
