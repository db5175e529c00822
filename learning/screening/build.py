"""From ``ScreenSettings`` to the list of screens, in the order they run.

Rules first (free), then the classifier (a forward pass per row), then the loss screen
(a forward pass of the large model per row), so each sees only what the cheaper ones kept.
"""

from __future__ import annotations

from collections.abc import Callable

from fedswarm.learning.data_files import Row
from fedswarm.learning.screening.rules import RulesScreen
from fedswarm.learning.screening.screen import Screen, ScreenResult, apply_screens
from fedswarm.learning.screening.settings import ScreenSettings


def build_screens(
    settings: ScreenSettings, row_losses: Callable[[list[Row]], list[float]] | None
) -> list[Screen]:
    """The configured screens; the loss screen needs ``row_losses`` (the trainer's)."""
    screens: list[Screen] = []
    s = settings
    if s.patterns or s.words or s.min_chars or s.max_chars or s.scripts:
        screens.append(RulesScreen(s))
    if s.classifier:
        from fedswarm.learning.screening.classifier import ClassifierScreen  # imports torch

        screens.append(
            ClassifierScreen(
                s.classifier,
                s.drop_labels,
                s.classifier_threshold,
                s.classifier_batch_size,
                s.classifier_max_length,
            )
        )
    if s.loss_outlier_mads is not None:
        if row_losses is None:
            raise ValueError("loss_outlier_mads needs a model to score rows with")
        from fedswarm.learning.screening.quality import LossOutlierScreen

        screens.append(LossOutlierScreen(row_losses, s.loss_outlier_mads))
    return screens


def screener(
    settings: ScreenSettings, row_losses: Callable[[list[Row]], list[float]] | None
) -> Callable[[list[Row]], ScreenResult]:
    """A function that screens rows with every configured screen."""
    screens = build_screens(settings, row_losses)
    return lambda rows: apply_screens(rows, screens, settings.report_excerpt_chars)
