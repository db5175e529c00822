"""The suite's xdist scheduling (tests/conftest.py): one unit of work per module, one
for every network-namespace test, so module fixtures are built once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest

from tests.conftest import NETNS_UNIT, ModuleScheduling, _unit_of, pytest_collection_modifyitems


def test_tests_of_one_module_share_a_unit_classes_and_parameters_included() -> None:
    ids = ["tests/p2p/test_ping.py::test_a",
           "tests/p2p/test_ping.py::test_b[1-2]",
           "tests/p2p/test_ping.py::TestStreams::test_c"]
    assert {_unit_of(i) for i in ids} == {"tests/p2p/test_ping.py"}
    assert _unit_of("tests/p2p/test_pong.py::test_a") != _unit_of(ids[0])


def test_every_namespace_module_shares_one_unit() -> None:
    assert _unit_of("tests/p2p/test_netns.py::test_x") == NETNS_UNIT
    assert _unit_of("tests/reliability/test_netns_federation_survives_faults.py::test_y") \
        == NETNS_UNIT
    # a folder's name does not count, only the module's
    assert _unit_of("tests/netns_tools/test_parse.py::test_z") == "tests/netns_tools/test_parse.py"


def test_the_scheduler_splits_node_ids_into_those_units() -> None:
    scheduler = object.__new__(ModuleScheduling)  # _split_scope reads no state
    assert scheduler._split_scope("tests/p2p/test_netns_mdns.py::t") == NETNS_UNIT
    assert scheduler._split_scope("tests/a/test_b.py::C::t[1]") == "tests/a/test_b.py"


@dataclass
class _Item:
    nodeid: str
    marks: tuple[str, ...] = ()

    def get_closest_marker(self, name: str) -> object | None:
        return name if name in self.marks else None


def test_a_namespace_test_outside_a_netns_module_is_refused_at_collection() -> None:
    items: list[Any] = [_Item("tests/p2p/test_links.py::test_flap", ("netns",))]
    with pytest.raises(pytest.UsageError, match=r"test_links\.py"):
        pytest_collection_modifyitems(cast(pytest.Config, None), items)


def test_modules_with_slow_tests_are_handed_out_first_in_their_order() -> None:
    items: list[Any] = [_Item("tests/a/test_quick.py::t1"), _Item("tests/b/test_big.py::t1"),
                        _Item("tests/b/test_big.py::t2", ("slow",)),
                        _Item("tests/c/test_netns.py::t", ("netns", "slow")),
                        _Item("tests/a/test_quick.py::t2")]
    pytest_collection_modifyitems(cast(pytest.Config, None), items)
    assert [i.nodeid for i in items] == [
        "tests/b/test_big.py::t1", "tests/b/test_big.py::t2", "tests/c/test_netns.py::t",
        "tests/a/test_quick.py::t1", "tests/a/test_quick.py::t2"]
