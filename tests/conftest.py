"""Suite-wide scheduling for pytest-xdist (``-n 2 --dist loadscope`` in pyproject.toml).

* Every test module is one unit of work, so a module-scoped fixture — a real federation
  shared by several tests — is built once, on one worker, not once per worker.
* Tests that create network namespaces share one unit: two such federations at once
  would each run a userspace switch and six daemons on the same two cores.
* Modules with ``slow`` tests are handed out first, so the long multi-daemon tests
  overlap each other and the quick unit tests fill the gaps at the end, instead of one
  four-minute test starting last while the other worker sits idle.

Why a scheduler of our own and not ``--dist loadgroup`` with ``xdist_group`` marks, as
this file used to do: pytest-xdist 3.8 tells the controller an item's group by appending
it to ``item._nodeid``, and pytest 9.2 builds ``item.nodeid`` from another attribute, so
the groups never reached the controller and every test was scheduled on its own. The
quality benchmark's module fixture (about a minute) and the hostile-member federation
(about two) were each built twice, once per worker, in every run. The controller sees
only node ids, so the scheduler groups by module path, and namespace tests by name: a
``netns``-marked test must live in a module whose file name says ``netns``
(checked at collection, below).
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

NETNS_UNIT = "network-namespace tests"


def _unit_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return NETNS_UNIT if "netns" in module.rsplit("/", 1)[-1] else module


class ModuleScheduling(LoadScopeScheduling):
    """xdist's load-by-scope scheduling with one scope per module (classes included) and
    one for every namespace test."""

    def _split_scope(self, nodeid: str) -> str:
        return _unit_of(nodeid)


@pytest.hookimpl(optionalhook=True)  # xdist's hook: unknown when run with -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> ModuleScheduling:
    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    misplaced = [item.nodeid for item in items
                 if item.get_closest_marker("netns") is not None
                 and _unit_of(item.nodeid) != NETNS_UNIT]
    if misplaced:
        raise pytest.UsageError(
            "tests marked netns must live in a module whose file name contains 'netns', "
            f"so the scheduler keeps them on one worker: {misplaced}")
    slow_units = {_unit_of(item.nodeid) for item in items if item.get_closest_marker("slow")}
    # A stable sort: within each half, collection order (and each module's order) holds.
    items.sort(key=lambda item: _unit_of(item.nodeid) not in slow_units)
