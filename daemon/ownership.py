"""The daemon's side of ownership marks: the member's ``MarkPlan`` from config and roster.

One place, so ``run``, ``export`` and ``ownership verify`` agree on the key, the roster
order that splits the channels, and this member's name in it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedswarm.learning.errors import OwnershipKeyError
from fedswarm.learning.ownership import MarkPlan, read_key_file

from .errors import ConfigError

if TYPE_CHECKING:
    from fedswarm.p2p.roster import Roster

    from .config import Config


def mark_plan(config: Config, roster: Roster) -> MarkPlan | None:
    """This member's mark with ``[ownership] enabled``, else ``None``.

    The split of norm channels follows the roster's org names as they are now; a roster
    change moves it, so members should keep the roster fixed while marks are trained.
    """
    if not config.ownership.enabled:
        return None
    try:
        key = read_key_file(config.ownership_key_path)
    except OwnershipKeyError as exc:
        raise ConfigError(f"{config.source}: [ownership] key_file: {exc}") from None
    return MarkPlan(config.ownership, key, tuple(m.org for m in roster.members),
                    config.node.org)
