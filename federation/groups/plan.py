"""Moshpit-style group planning: which peers average together in which round.

Why a grid: if every round's groups were drawn at random, each round would shrink
the disagreement between peers only by a constant factor, and a 256-peer federation
would need many rounds to agree. Moshpit all-reduce (hivemind) instead places the N
peers on a virtual d-dimensional grid and, in round r, averages each line of peers
that share every coordinate except coordinate ``r mod d``. After d consecutive rounds
every peer holds the exact global average, with d about log_g(N).

The rule implemented here:

* The membership view is de-duplicated and sorted, so the plan does not depend on the
  order in which a caller learnt about peers.
* Grid shape: the side lengths are drawn from ``3 .. g + 2``; the dimension d ranges
  from the smallest with ``(g + 2) ** d >= N`` up to ``ceil(log_g N)`` (the dimension
  of the ``g x g x ...`` grid); dimensions beyond the smallest use sides of at least
  ``g`` only (a 3x3x3 grid would put everyone in groups of 3, which one straggler
  stops). The shape minimises the number of empty cells
  (product - N), then d, then the distance of the sides from ``g``. Powers of ``g``
  (16, 64, 256, 1024, 4096 for g = 4) get a perfect ``g x g x ...`` grid; sizes that
  factor into sides in that range (12 = 3x4, 100 = 4x5x5) get a perfect grid too.
  Why empty cells come first (issue #27): an empty cell shortens lines, short lines
  are pooled across the grid, and the peers of a shorter line carry a different mass,
  so one pass over the axes no longer gives the exact average. With d capped at the
  smallest dimension, 1,024 and 4,096 peers got 5x6x6x6 and 4x5x6x6x6 grids with 56
  and 224 empty cells and missed the ``ceil(log_g N) + 2`` round bound; the extra
  dimension costs at most ``ceil(log_g N)`` rounds per epoch, which the bound allows.
* A paired last axis: a grid may end in an axis of side 2 when that makes it perfect
  (8 = 4x2, 32 = 4x4x2, 128 = 4x4x4x2 for g = 4). Lines of two never average as
  pairs (a pair's average reveals each one's update to the other); on that axis every
  group is ``g // 2`` whole lines (at least 2). Why it is still exact: after the other
  axes each of the two halves of the grid is uniform, and every group holds as many
  members of one half as of the other. Without it every power of two that is not a
  power of 4 (8, 128, 512, 2048) had empty cells and missed the ``ceil(log_g N) + 2``
  bound with no dropout at all (8 peers: 5 rounds on 3x3; 128: 7 on 4x6x6).
* Epoch: round r belongs to epoch ``r // d`` and uses axis ``r % d``. Each epoch
  places peers on the grid in the order of ``sha256(seed, epoch, peer id)``, so every
  pass over the axes uses a different grid and a peer meets new peers each pass.
* Lines that are short because of empty cells (fewer than 3 peers) never form a group
  of one or two: their members are pooled; a pool of 3 or more is split into groups of
  about ``g``; a smaller pool joins the smallest groups one peer at a time.
* N <= g + 2 gives one group of everyone (plain federated averaging); N < 3 gives no
  group at all (the caller trains alone this round).

The planner is pure and deterministic: peers with the same view, round and seed
compute the same plan without talking. Plans are memoised on (member set, round,
group size, seed): a daemon judges every invitation against its own plan, and the
4,096-peer simulation runs every peer's agreement in one process, so the same plan is
asked for many times per round (``planned_group`` looks a member up in O(1)). Peers
whose views differ can compute different plans; ``agreement`` resolves that.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

from ..errors import GroupSizeError
from ..round import MIN_GROUP_SIZE

DEFAULT_GROUP_SIZE = 4

_SIDE_SLACK = 2
"""Grid sides may exceed ``group_size`` by this much, so awkward N still get few empty cells."""

PAIRED_SIDE = 2
"""The side of a paired last axis, whose lines of two are grouped several at a time."""

Group = tuple[str, ...]
T = TypeVar("T")


@dataclass(frozen=True)
class GridShape:
    """Side lengths of the virtual grid; ``len(dims)`` rounds make one epoch."""

    dims: tuple[int, ...]

    @property
    def rounds_per_epoch(self) -> int:
        return len(self.dims)

    @property
    def cells(self) -> int:
        return math.prod(self.dims)


def largest_group(group_size: int) -> int:
    """The most members a planned group can have with target ``group_size``.

    A grid line holds up to ``group_size + 2``; leftovers of short lines (at most two)
    go one each to the smallest groups, so a full line can gain one more. Secure
    aggregation v3 sizes its grid for a bounded group, so the configuration checks
    this against the protocol's limit before a round can hit it.
    """
    return group_size + _SIDE_SLACK + 1


def _check_group_size(group_size: int) -> None:
    if group_size < MIN_GROUP_SIZE:
        raise GroupSizeError(
            f"group_size must be >= {MIN_GROUP_SIZE} (got {group_size}): "
            "in a group of two the average reveals the other peer's update"
        )


@lru_cache(maxsize=1024)
def grid_shape(n_members: int, group_size: int = DEFAULT_GROUP_SIZE) -> GridShape:
    """The grid used for ``n_members`` peers with target ``group_size``.

    For fewer than 3 members the shape is ``(n_members,)``; ``plan_groups`` forms no
    group then.
    """
    _check_group_size(group_size)
    if n_members <= group_size + _SIDE_SLACK:
        return GridShape((max(n_members, 0),))
    largest_side = group_size + _SIDE_SLACK
    smallest_dimension = 1
    while largest_side**smallest_dimension < n_members:
        smallest_dimension += 1
    largest_dimension = smallest_dimension
    while group_size**largest_dimension < n_members:
        largest_dimension += 1
    best: tuple[int, int, int, tuple[int, ...]] | None = None
    paired: tuple[int, int, int, tuple[int, ...]] | None = None
    for dimension in range(smallest_dimension, largest_dimension + 1):
        # An extra dimension only with sides of at least g: 27 = 3x3x3 would be exact but
        # put every member in groups of 3, where one straggler ends the group's round
        # (its contributor floor is all 3); 5x6 keeps groups of 5 and 6.
        low = MIN_GROUP_SIZE if dimension == smallest_dimension else group_size
        sides = range(low, largest_side + 1)
        for dims in itertools.combinations_with_replacement(sides, dimension):
            cells = math.prod(dims)
            if cells < n_members:
                continue
            score = (
                cells - n_members,
                dimension,
                sum(abs(side - group_size) for side in dims),
                dims,
            )
            if best is None or score < best:
                best = score
        for dims in _paired_grids(n_members, sides, dimension, group_size):
            score = (0, dimension, _distance(dims, group_size), dims)
            if paired is None or score < paired:
                paired = score
    assert best is not None  # (g + 2) ** d >= n_members guarantees a candidate
    if paired is not None and best[0] > 0:
        # Only where every plain grid has empty cells: sizes with a perfect plain grid
        # plan exactly as they did before the paired axis existed.
        return GridShape(paired[3])
    return GridShape(best[3])


def _paired_grids(
    n_members: int, sides: range, dimension: int, group_size: int
) -> Iterable[tuple[int, ...]]:
    """Perfect grids of ``dimension`` axes whose last axis is paired (side 2), if the
    paired axis forms at least two groups, each within ``largest_group``."""
    if dimension < 2 or n_members % PAIRED_SIDE:
        return
    lines = list(range(n_members // PAIRED_SIDE))
    runs = _split_evenly(lines, _lines_per_paired_group(group_size), 2)
    if len(runs) < 2:
        return  # one group of everyone is for N <= g + 2 only (6 peers at g = 3: 3x3)
    if max(len(run) for run in runs) * PAIRED_SIDE > largest_group(group_size):
        return
    for dims in itertools.combinations_with_replacement(sides, dimension - 1):
        if math.prod(dims) * PAIRED_SIDE == n_members:
            yield (*dims, PAIRED_SIDE)


def _lines_per_paired_group(group_size: int) -> int:
    return max(2, group_size // PAIRED_SIDE)


def _distance(dims: tuple[int, ...], group_size: int) -> int:
    """How far a grid's groups are from ``group_size`` (a paired axis by its groups)."""
    paired = PAIRED_SIDE * _lines_per_paired_group(group_size)
    return sum(
        abs((paired if side == PAIRED_SIDE else side) - group_size) for side in dims
    )


def epoch_of(round: int, n_members: int, group_size: int = DEFAULT_GROUP_SIZE) -> int:
    """The pass over the grid's axes that ``round`` belongs to (a new grid each epoch)."""
    return round // grid_shape(n_members, group_size).rounds_per_epoch


def _placement_prefix(seed: bytes, epoch: int) -> hashlib._Hash:
    """The start of ``sha256(len(seed) || seed || epoch || peer id)``, a peer's place in
    an epoch's grid: hashed once per plan, copied per peer."""
    digest = hashlib.sha256()
    digest.update(len(seed).to_bytes(4, "big"))
    digest.update(seed)
    digest.update(epoch.to_bytes(8, "big", signed=True))
    return digest


def _split_evenly(items: list[T], target: int, smallest: int) -> list[list[T]]:
    """Split ``items`` into about ``len(items) / target`` runs of at least ``smallest``
    (when there are that many), whose lengths differ by at most one."""
    count = max(1, min(len(items) // smallest, math.floor(len(items) / target + 0.5)))
    base, extra = divmod(len(items), count)
    runs: list[list[T]] = []
    start = 0
    for index in range(count):
        size = base + (1 if index < extra else 0)
        runs.append(items[start : start + size])
        start += size
    return runs


def plan_groups(
    members: Sequence[str],
    round: int,
    group_size: int = DEFAULT_GROUP_SIZE,
    *,
    seed: bytes = b"",
) -> list[Group]:
    """Partition the membership view into this round's groups.

    Every member appears in exactly one group; every group has at least 3 members
    (sides are 3..g+2; a group that absorbed leftovers of short lines can be a little
    larger). Each group is a sorted tuple and the list is sorted, so equal views give
    equal plans. Returns ``[]`` when fewer than 3 distinct members are given.
    """
    return list(_plan(frozenset(members), round, group_size, seed).groups)


def planned_group(
    me: str,
    members: Iterable[str],
    round: int,
    group_size: int = DEFAULT_GROUP_SIZE,
    *,
    seed: bytes = b"",
) -> Group | None:
    """``group_of(me, plan_groups(members, ...))`` in O(|members|) on a memoised plan."""
    return _plan(frozenset(members), round, group_size, seed).by_member.get(me)


@dataclass(frozen=True)
class _Plan:
    groups: tuple[Group, ...]
    by_member: dict[str, Group]


_PLAN_CACHE_SIZE = 16
"""A daemon needs this round's plan for one or two views; a simulation for one per round."""


@lru_cache(maxsize=_PLAN_CACHE_SIZE)
def _plan(view_set: frozenset[str], round: int, group_size: int, seed: bytes) -> _Plan:
    _check_group_size(group_size)
    if round < 0:
        raise ValueError(f"round must be >= 0 (got {round})")
    groups = _partition(sorted(view_set), round, group_size, seed)
    by_member = {peer: group for group in groups for peer in group}
    return _Plan(tuple(groups), by_member)


def _partition(view: list[str], round: int, group_size: int, seed: bytes) -> list[Group]:
    if len(view) < MIN_GROUP_SIZE:
        return []
    shape = grid_shape(len(view), group_size)
    if shape.rounds_per_epoch == 1:
        return [tuple(view)]
    epoch, axis = divmod(round, shape.rounds_per_epoch)
    prefix = _placement_prefix(seed, epoch)

    def placement(peer: str) -> bytes:
        digest = prefix.copy()
        digest.update(peer.encode("utf-8"))
        return digest.digest()

    placed = sorted(view, key=placement)
    stride = math.prod(shape.dims[:axis])
    side = shape.dims[axis]
    lines: dict[int, list[str]] = {}
    for index, peer in enumerate(placed):
        digit = (index // stride) % side
        lines.setdefault(index - digit * stride, []).append(peer)
    if side == PAIRED_SIDE:
        return _paired_groups([lines[key] for key in sorted(lines)], group_size)
    groups: list[list[str]] = []
    pool: list[str] = []
    for key in sorted(lines):
        line = lines[key]
        if len(line) >= MIN_GROUP_SIZE:
            groups.append(line)
        else:
            pool.extend(line)
    if len(pool) >= MIN_GROUP_SIZE:
        groups.extend(_split_evenly(pool, group_size, MIN_GROUP_SIZE))
    else:
        for peer in pool:
            smallest = min(range(len(groups)), key=lambda i: (len(groups[i]), i))
            groups[smallest].append(peer)
    return sorted(tuple(sorted(group)) for group in groups)


def _paired_groups(lines: list[list[str]], group_size: int) -> list[Group]:
    """The paired axis' groups: whole lines of two, about ``g // 2`` of them (at least 2)
    per group, split as evenly as whole lines allow.

    Whole lines keep every group balanced between the two halves of the grid, which is
    what makes the pass exact; a pool split as in rule 5 would cut lines apart."""
    runs = _split_evenly(lines, _lines_per_paired_group(group_size), 2)
    return sorted(tuple(sorted(peer for line in run for peer in line)) for run in runs)


def group_of(peer_id: str, groups: Sequence[Group]) -> Group | None:
    """The group containing ``peer_id``, or None if the plan left it out."""
    for group in groups:
        if peer_id in group:
            return group
    return None


def leader_of(group: Sequence[str]) -> str:
    """The peer that invites the others: the lowest peer id, so nobody has to be told."""
    if not group:
        raise ValueError("an empty group has no leader")
    return min(group)


def group_id(round: int, members: Iterable[str]) -> str:
    """A short, stable name for a group in a round (16 hex chars of a sha256).

    Built from a JSON encoding so no peer id can be crafted to collide with another
    member list by embedding separators.
    """
    payload = json.dumps([round, sorted(set(members))], separators=(",", ":"))
    return hashlib.sha256(b"fedswarm-group\x00" + payload.encode("utf-8")).hexdigest()[:16]
