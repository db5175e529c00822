"""Screen a member's rows before they are trained on (docs/safety.md).

Under secure aggregation nobody can look at another member's update, so the only place a
harmful or broken row can be stopped is the member's own loader. Each screen here gives a
reason for every row it refuses; the daemon appends those to a quarantine report in its
state folder, so no row is ever lost without saying where it was and why.

This package's top level imports no torch: ``fedswarm config check`` reads
``ScreenSettings`` and checks a classifier folder with plain file reads. The classifier
and loss screens (``classifier.py``, ``quality.py``) import torch when built.
"""

from __future__ import annotations

from fedswarm.learning.screening.classifier_files import ClassifierInfo, check_classifier_dir
from fedswarm.learning.screening.report import QuarantineReport
from fedswarm.learning.screening.row_text import row_text
from fedswarm.learning.screening.rules import RulesScreen
from fedswarm.learning.screening.screen import DroppedRow, Screen, ScreenResult, apply_screens
from fedswarm.learning.screening.settings import ScreenSettings

__all__ = [
    "ClassifierInfo",
    "DroppedRow",
    "QuarantineReport",
    "RulesScreen",
    "Screen",
    "ScreenResult",
    "ScreenSettings",
    "apply_screens",
    "check_classifier_dir",
    "row_text",
]
