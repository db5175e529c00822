"""Group momentum (FedAvgM): each member keeps a momentum of its group's steps.

With many local steps between averages, one group average is a noisy step: members
drift towards their own data and the average partly cancels their moves. FedAvgM
(Hsu et al., 2019) treats ``average - start`` (start: the model this round's training
began from, the last group result) as a pseudo-gradient and applies a heavy-ball step::

    v     <- beta * v + (average - start)
    model <- start + v

``beta = 0`` is plain averaging. There is no server, so each member keeps its own ``v``;
members of the same groups compute the same ``v``. It lives in memory: a restarted member
starts again from zero, as a new member does.
"""

from __future__ import annotations

import numpy as np

from ..errors import WeightError


class GroupMomentum:
    """One member's momentum over the group results it applied."""

    def __init__(self, beta: float) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"group_momentum: must be in [0, 1), got {beta}")
        self.beta = beta
        self._velocity: np.ndarray | None = None

    def velocity(self) -> np.ndarray | None:
        """A copy of the momentum now (None before the first result), for ``restore``."""
        return None if self._velocity is None else self._velocity.copy()

    def restore(self, velocity: np.ndarray | None) -> None:
        """Undo ``step``s since ``velocity()`` returned ``velocity`` (the validation gate
        refused the result they applied)."""
        self._velocity = None if velocity is None else velocity.copy()

    def step(self, start: np.ndarray, average: np.ndarray) -> np.ndarray:
        """The model to load after the group averaged to ``average`` from ``start``.

        The first result a member applies is taken as it is, with no momentum yet:
        members may start from different adapters (their own seeds), and a step from
        one's own start would carry that difference into every later round.
        """
        if start.shape != average.shape:
            raise WeightError(f"group momentum: start has shape {start.shape}, "
                              f"average {average.shape}")
        if self._velocity is None:
            self._velocity = np.zeros(average.shape, dtype=np.float32)
            return average.astype(np.float32, copy=True)
        if self._velocity.shape != average.shape:
            raise WeightError(f"group momentum: the adapter changed size "
                              f"({self._velocity.shape} -> {average.shape})")
        self._velocity = (self.beta * self._velocity
                          + (average - start)).astype(np.float32, copy=False)
        return (start + self._velocity).astype(np.float32, copy=False)
