"""Exceptions raised by ``fedswarm.learning``.

The daemon runs training in a worker thread and must decide, per error, whether to
skip a round, stop the peer, or tell the operator to fix a file. One class per cause
makes that decision a plain ``except`` clause instead of string matching.
"""

from __future__ import annotations


class LearningError(Exception):
    """Base class for every error this package raises on purpose."""


class ModelLoadError(LearningError):
    """The model path is not a loadable model, or its architecture is unknown.

    The message always names the path, because the operator has to fix the config.
    """


class DataError(LearningError):
    """A data file cannot be used at all (missing, unreadable, no valid rows)."""


class BadRowError(DataError):
    """One row of a data file is malformed.

    Normally such rows are skipped and reported as warnings; this class exists so a
    caller that wants strictness can raise it with the same file and line details.
    """

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class CheckpointError(LearningError):
    """A checkpoint is missing, incomplete, corrupt, or for a different adapter."""


class ExportError(LearningError):
    """The adapter could not be written as a standard PEFT directory."""


class PrivacyConfigError(LearningError):
    """DP settings this trainer cannot account for, or whose budget cannot cover one round.

    Raised when the trainer is built, so the daemon refuses to start with one line
    instead of training without the guarantee the operator asked for.
    """


class PrivacyBudgetSpentError(LearningError):
    """The privacy budget has no room for another DP-SGD step: training must stop.

    Not a failure: the daemon logs it once and goes on serving and averaging.
    """


class OwnershipError(LearningError):
    """The ownership mark cannot be embedded or verified as configured (docs/ownership.md)."""


class OwnershipKeyError(OwnershipError):
    """The member's ownership key file is missing, unreadable, malformed or not mode 0600.

    The message names the file but never its content: the key is the member's secret.
    """


class NoNormLayersError(OwnershipError):
    """The model has no normalisation layer whose scale can carry the mark."""


class MarkCapacityError(OwnershipError):
    """The member's share of normalisation channels is too small for the bits asked for."""


class OffsiteError(LearningError):
    """An offsite-tuning layout, package or adapter that cannot be used (docs/offsite.md)."""


class TamperedPackageError(OffsiteError):
    """An emulator package whose files do not match its manifest or its published id.

    Raised before any file of the package is parsed: a member never loads weights the
    owner did not publish.
    """


class ScreenConfigError(LearningError):
    """A ``[data.screen]`` setting cannot work: a bad regular expression, an unreadable
    classifier folder, a label the classifier does not have. Raised at config check."""


class EvalSetError(LearningError):
    """An evaluation set cannot be used; the message names ``file:line`` of the first problem.

    ``fedswarm eval`` is strict where training is lenient: a score over a silently
    shortened set would be a different score.
    """
