"""Suite-wide scheduling for pytest-xdist (``-n 2 --dist loadgroup`` in pyproject.toml).

* Every test module is one group, so a module-scoped fixture — a real federation shared
  by several tests — is built once, on one worker, not once per worker.
* Tests that create network namespaces share one group: two such federations at once
  would each run a userspace switch and six daemons on the same two cores.
* Modules with ``slow`` tests are handed out first, so the long multi-daemon tests
  overlap each other and the quick unit tests fill the gaps at the end, instead of one
  four-minute test starting last while the other worker sits idle.
"""

from __future__ import annotations

import pytest


def _group(item: pytest.Item) -> str:
    if item.get_closest_marker("netns") is not None:
        return "netns"
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)  # before xdist appends the group to each node id
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow_groups = {_group(item) for item in items if item.get_closest_marker("slow")}
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    # A stable sort: within each half, collection order (and each module's order) holds.
    items.sort(key=lambda item: _group(item) not in slow_groups)
