"""The ``[data.screen]`` table: which screens run on this member's rows, and how strictly.

Everything is checked when the config is read (a bad regular expression is a typo that must
fail at ``fedswarm config check``, not after the model has loaded). The classifier folder
is checked apart, with plain file reads (``classifier_files.py``), since it is a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fedswarm.learning.errors import ScreenConfigError


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{key}: {message}")


def compile_pattern(pattern: str, key: str) -> re.Pattern[str]:
    """``pattern`` compiled case-insensitively; ``ScreenConfigError`` in one line if it is not
    a regular expression."""
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ScreenConfigError(f"{key}: {pattern!r} is not a regular expression ({exc})") from None


@dataclass
class ScreenSettings:
    """The member's data screen. Every screen is off by default.

    Rules: ``patterns`` (regular expressions, case-insensitive) and ``words`` (whole words,
    case-insensitive) drop any row that contains one; ``min_chars`` / ``max_chars`` bound a
    row's length; ``scripts`` (Unicode script names such as ``"LATIN"``) with
    ``min_script_share`` drop rows whose letters are mostly in other scripts.

    Classifier: ``classifier`` is a local ``AutoModelForSequenceClassification`` folder;
    a row is dropped when the probability of any label in ``drop_labels`` reaches
    ``classifier_threshold``. Labels not named are kept.

    Quality: ``loss_outlier_mads`` drops rows whose loss under the model (the base model with
    the latest checkpoint's adapter when the daemon has one) lies more than that many median
    absolute deviations above the median.

    ``report_excerpt_chars`` copies the start of each dropped row into the quarantine report;
    0 (the default) records only its sha256 (docs/safety.md says why).
    """

    patterns: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    min_chars: int = 0
    max_chars: int | None = None
    scripts: list[str] = field(default_factory=list)
    min_script_share: float = 0.9
    classifier: str | None = None
    drop_labels: list[str] = field(default_factory=list)
    classifier_threshold: float = 0.5
    classifier_batch_size: int = 16
    classifier_max_length: int = 256
    loss_outlier_mads: float | None = None
    report_excerpt_chars: int = 0

    def __post_init__(self) -> None:
        for i, pattern in enumerate(self.patterns):
            try:
                compile_pattern(pattern, f"patterns[{i}]")
            except ScreenConfigError as exc:
                raise ValueError(str(exc)) from None
        _require(all(w.strip() for w in self.words), "words", "must not contain empty words")
        _require(self.min_chars >= 0, "min_chars", "must be >= 0")
        if self.max_chars is not None:
            _require(
                self.max_chars > max(self.min_chars, 0),
                "max_chars",
                "must be greater than min_chars",
            )
        self.scripts = [s.upper() for s in self.scripts]
        _require(all(s.strip() for s in self.scripts), "scripts", "must not contain empty names")
        _require(0.0 < self.min_script_share <= 1.0, "min_script_share", "must be in (0, 1]")
        if self.classifier is not None:
            _require(self.classifier != "", "classifier", "must be a folder, or unset")
            _require(
                len(self.drop_labels) > 0,
                "drop_labels",
                "must name at least one label of the classifier when classifier is set",
            )
        else:
            _require(not self.drop_labels, "drop_labels", "needs classifier to be set")
        _require(
            0.0 < self.classifier_threshold <= 1.0, "classifier_threshold", "must be in (0, 1]"
        )
        _require(self.classifier_batch_size > 0, "classifier_batch_size", "must be positive")
        _require(self.classifier_max_length >= 8, "classifier_max_length", "must be >= 8")
        if self.loss_outlier_mads is not None:
            _require(
                0 < self.loss_outlier_mads < float("inf"),
                "loss_outlier_mads",
                "must be a finite number > 0, or unset",
            )
        _require(
            0 <= self.report_excerpt_chars <= 1000, "report_excerpt_chars", "must be in [0, 1000]"
        )

    @property
    def enabled(self) -> bool:
        """Whether any screen runs."""
        return bool(
            self.patterns
            or self.words
            or self.min_chars
            or self.max_chars
            or self.scripts
            or self.classifier
            or self.loss_outlier_mads
        )
