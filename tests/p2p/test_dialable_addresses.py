"""Which addresses a node will dial, and that checking one costs a parse only once."""

from __future__ import annotations

import multiaddr
import pytest
from fedswarm.p2p import connections
from fedswarm.p2p.connections import MAX_ADDR_CHARS, is_dialable

PEER = "12D3KooWQbFQa9ZjV5jyhMRaRY6kDhKx2XWomZ6b8cu39ZS5G2Fa"


@pytest.mark.parametrize(("addr", "dialable"), [
    ("/ip4/127.0.0.1/tcp/4001", True),
    (f"/ip4/10.1.2.3/tcp/4001/p2p/{PEER}", True),
    ("/ip6/::1/tcp/4001", True),
    ("/ip4/0.0.0.0/tcp/4001", False),  # a listen address, not a place to dial
    ("/ip6/::/tcp/4001", False),
    ("/ip4/127.0.0.1/udp/4001", False),  # no TCP
    ("/ip4/127.0.0.1", False),
    ("not a multiaddr", False),
    ("/ip4/300.1.1.1/tcp/1", False),
    ("", False),
])
def test_only_tcp_addresses_with_a_concrete_host_are_dialable(addr: str, dialable: bool) -> None:
    assert is_dialable(addr) is dialable


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every string py-multiaddr is asked to parse from here on, with nothing remembered."""
    strings: list[str] = []
    real = multiaddr.Multiaddr

    def counting(addr: str) -> multiaddr.Multiaddr:
        strings.append(addr)
        return real(addr)

    monkeypatch.setattr(connections.multiaddr, "Multiaddr", counting)
    connections._is_dialable.cache_clear()
    return strings


def test_an_overlong_address_from_the_wire_is_refused_unparsed_and_unremembered(
    parsed: list[str],
) -> None:
    long_addr = "/ip4/127.0.0.1/tcp/4001/p2p/" + "x" * MAX_ADDR_CHARS
    assert is_dialable(long_addr) is False
    assert parsed == []
    assert connections._is_dialable.cache_info().currsize == 0


def test_an_address_checked_again_is_not_parsed_again(parsed: list[str]) -> None:
    """The maintenance pass checks the node's listen addresses every second: py-multiaddr's
    parse was a fifth of an idle node's CPU."""
    for _ in range(50):
        assert is_dialable("/ip4/127.0.0.1/tcp/4001")
        assert not is_dialable("/ip4/0.0.0.0/tcp/4001")
    assert sorted(parsed) == ["/ip4/0.0.0.0/tcp/4001", "/ip4/127.0.0.1/tcp/4001"]


def test_the_remembered_answers_are_bounded() -> None:
    connections._is_dialable.cache_clear()
    for port in range(1, 3000):
        is_dialable(f"/ip4/127.0.0.1/tcp/{port}")
    info = connections._is_dialable.cache_info()
    assert info.maxsize is not None
    assert info.currsize <= info.maxsize < 3000
