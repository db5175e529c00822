"""A port in use stops ``fedswarm run`` with one line; the daemon never runs without a listener."""

from __future__ import annotations

import asyncio
import socket
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomli_w
from fedswarm.daemon.errors import ListenError
from fedswarm.daemon.ports import probe_listen, tcp_endpoint

RunCli = Callable[..., object]
OneLineError = Callable[..., str]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that another program is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def _set(config: Path, section: str, key: str, value: object) -> None:
    document = tomllib.loads(config.read_text())
    document.setdefault(section, {})[key] = value
    config.write_text(tomli_w.dumps(document))


def test_api_port_in_use_is_one_line(
    node_config: Path, taken_port: int, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    _set(node_config, "api", "port", taken_port)
    one_line_error(run_cli("run", "--config", str(node_config)),
                   "[api] port", f"127.0.0.1:{taken_port}", "already in use")


def test_libp2p_port_in_use_is_one_line(
    node_config: Path, taken_port: int, run_cli: RunCli, one_line_error: OneLineError
) -> None:
    _set(node_config, "node", "listen", f"/ip4/127.0.0.1/tcp/{taken_port}")
    one_line_error(run_cli("run", "--config", str(node_config)),
                   "[node] listen", f"127.0.0.1:{taken_port}", "already in use")


def test_probe_accepts_port_zero_and_a_free_port() -> None:
    probe_listen("127.0.0.1", 0, key="[api] port")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = int(sock.getsockname()[1])
    probe_listen("127.0.0.1", free, key="[api] port")


def test_probe_names_an_address_that_is_not_this_machines() -> None:
    with pytest.raises(ListenError, match=r"\[node\] listen: .*not an address of this machine"):
        probe_listen("192.0.2.1", 4001, key="[node] listen")  # TEST-NET-1: never local


def test_tcp_endpoint_reads_ip_multiaddrs_only() -> None:
    assert tcp_endpoint("/ip4/0.0.0.0/tcp/4001") == ("0.0.0.0", 4001)
    assert tcp_endpoint("/ip6/::1/tcp/4001") == ("::1", 4001)
    assert tcp_endpoint("/dns4/a.example/tcp/4001") is None
    assert tcp_endpoint("/ip4/1.2.3.4/udp/4001/quic") is None


@pytest.mark.slow
def test_daemon_stops_when_libp2p_cannot_listen(node_config: Path, taken_port: int) -> None:
    """The check behind the probe: taken between probe and start, the daemon still refuses.

    py-libp2p logs "Failed to start TCP listener" and starts with no listener at all;
    the daemon used to carry on and train, unreachable.
    """
    from fedswarm.daemon.cli import _prepare
    from fedswarm.daemon.service import Daemon

    _set(node_config, "node", "listen", f"/ip4/127.0.0.1/tcp/{taken_port}")
    _set(node_config, "federation", "secure_aggregation", "none")
    config, identity, roster, token = _prepare(node_config)
    daemon = Daemon(config, identity, roster, token)
    with pytest.raises(ListenError, match=r"\[node\] listen: cannot listen on"):
        asyncio.run(daemon.run())
