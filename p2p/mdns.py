"""mDNS discovery bound to one network interface.

py-libp2p 0.8.1's ``MDNSDiscovery`` opens its zeroconf sockets on every
interface of the machine and advertises the address of the default route, so a
daemon meant to be found on one internal segment would also answer and listen on
every other one (a public interface, a VPN, a container bridge). This module
builds the same discovery from py-libp2p's own parts (``PeerBroadcaster``,
``PeerListener``, the same service type and TXT records) around a ``Zeroconf``
instance bound to the IPv4 addresses of the one interface named in
``[node] mdns_interface``, and advertises only those addresses.

Discovered peers land in the host's peerstore exactly as with py-libp2p's own
mDNS; the roster check still decides who may connect.
"""

from __future__ import annotations

import logging
import socket

import psutil
import trio
from libp2p.abc import IHost
from libp2p.discovery.mdns.broadcaster import PeerBroadcaster
from libp2p.discovery.mdns.listener import PeerListener
from libp2p.discovery.mdns.mdns import SERVICE_TYPE
from libp2p.discovery.mdns.utils import stringGen
from zeroconf import IPVersion, Zeroconf

from .errors import P2PError

log = logging.getLogger("fedswarm.p2p.mdns")

_TTL_S = 120
_CLEANUP_INTERVAL_S = 60.0


class MdnsInterfaceError(P2PError):
    """The configured mDNS interface does not exist or has no IPv4 address."""


def interface_ipv4_addresses(name: str) -> list[str]:
    """The IPv4 addresses of interface ``name``, in the order the kernel lists them."""
    interfaces = psutil.net_if_addrs()
    if name not in interfaces:
        known = ", ".join(sorted(interfaces)) or "none"
        raise MdnsInterfaceError(f"mdns_interface {name!r} does not exist (interfaces: {known})")
    addresses = [a.address for a in interfaces[name] if a.family == socket.AF_INET]
    if not addresses:
        raise MdnsInterfaceError(f"mdns_interface {name!r} has no IPv4 address")
    return addresses


class _InterfaceBroadcaster(PeerBroadcaster):
    """py-libp2p's broadcaster, advertising the interface's addresses.

    The base class picks the address of the default route (a UDP socket
    "connected" to a public resolver), which on a multi-homed host is usually
    not the segment mDNS is meant for.
    """

    def __init__(self, addresses: list[str], **kwargs: object) -> None:
        self._interface_addresses = list(addresses)
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def _get_local_ips(self) -> list[str]:
        return list(self._interface_addresses)


class InterfaceMdnsDiscovery:
    """mDNS announce + browse on one interface; ``start``/``stop`` as py-libp2p's.

    The node builds it (off the trio thread: zeroconf opens sockets and starts
    a thread), starts it once the host listens, and stops it when the host
    stops. ``cleanup_loop`` drops peers whose announcements went stale
    (py-libp2p runs the same pass in its own mDNS service); the node runs it
    in its nursery.
    """

    def __init__(self, host: IHost, interface: str) -> None:
        self.interface = interface
        self.addresses = interface_ipv4_addresses(interface)
        network = host.get_network()
        self.zeroconf = Zeroconf(interfaces=self.addresses, ip_version=IPVersion.V4Only)
        try:
            self.service_name = f"{stringGen(63)}.{SERVICE_TYPE}"
            self.broadcaster = _InterfaceBroadcaster(
                self.addresses,
                zeroconf=self.zeroconf,
                service_type=SERVICE_TYPE,
                service_name=self.service_name,
                peer_id=str(network.get_peer_id()),
                port=4001,  # what py-libp2p advertises; peers dial the TXT multiaddrs
                host=host,
            )
            self.listener = PeerListener(
                peerstore=network.peerstore,
                zeroconf=self.zeroconf,
                service_type=SERVICE_TYPE,
                service_name=self.service_name,
                ttl=_TTL_S,
            )
        except BaseException:
            self.zeroconf.close()
            raise

    def start(self) -> None:
        self.broadcaster.register()
        log.info("mDNS bound to %s (%s)", self.interface, ", ".join(self.addresses))

    def stop(self) -> None:
        try:
            self.broadcaster.unregister()
            self.listener.stop()
        finally:
            self.zeroconf.close()

    async def cleanup_loop(self) -> None:
        while True:
            await trio.sleep(_CLEANUP_INTERVAL_S)
            try:
                removed = self.listener.cleanup_stale_entries(max_age=_TTL_S * 2)
            except Exception:
                log.warning("mDNS stale-entry cleanup failed", exc_info=True)
                continue
            if removed:
                log.debug("mDNS dropped %d stale peers", removed)
