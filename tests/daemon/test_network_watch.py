"""A daemon whose p2p layer ended by itself exits non-zero instead of running deaf."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from fedswarm.daemon import service
from fedswarm.daemon.errors import NetworkLayerEndedError


class _Node:
    def __init__(self) -> None:
        self.ended = False

    def ended_unexpectedly(self) -> bool:
        return self.ended


async def test_the_watch_ends_the_daemon_once_the_p2p_layer_has_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "NETWORK_WATCH_S", 0.01)
    node = _Node()
    daemon = SimpleNamespace(node=node, _stop=asyncio.Event())
    watch = asyncio.create_task(service.Daemon._watch_network(daemon))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not watch.done()  # a running p2p layer: nothing happens
    node.ended = True
    with pytest.raises(NetworkLayerEndedError):
        await asyncio.wait_for(watch, timeout=1)


async def test_a_stopping_daemon_is_not_ended_by_the_watch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service, "NETWORK_WATCH_S", 0.01)
    node = _Node()
    node.ended = True
    stop = asyncio.Event()
    stop.set()
    watch = asyncio.create_task(
        service.Daemon._watch_network(SimpleNamespace(node=node, _stop=stop))  # type: ignore[arg-type]
    )
    await asyncio.sleep(0.05)
    assert not watch.done()
    watch.cancel()
