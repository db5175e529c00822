"""Count the connections the transport refuses before any fedswarm code sees them.

py-libp2p refuses an inbound dialler that offers no security protocol we accept
(plaintext, TLS, secio), fails the Noise handshake, or offers no multiplexer we
accept (Mplex only, as stock js-libp2p clients may): it logs at debug (or at ERROR,
for the muxer) and closes the socket. Nothing reached the node's counters, so
``/api/security``, ``/metrics`` and the ``FedswarmRejectingMessages`` alert never
saw such outsiders. :class:`RefusalCountingUpgrader` is the swarm's upgrader with
one addition: an inbound upgrade that fails is reported through ``on_refused``
before the failure goes on exactly as before. Outbound failures (our own dials to
a member that is not up yet) are not refusals and are not counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from libp2p.abc import IMuxedConn, IRawConnection, ISecureConn
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import MultiselectClientError, MultiselectError
from libp2p.transport.exceptions import MuxerUpgradeFailure, SecurityUpgradeFailure
from libp2p.transport.upgrader import TransportUpgrader

log = logging.getLogger("fedswarm.p2p.node")

#: ``on_refused(reason, peer_id or None, detail)``, as :meth:`NodeCounters.reject`.
RefusedHook = Callable[[str, str | None, str], None]

#: The reasons this module reports.
SECURITY_REFUSED = "security_refused"  # no security protocol in common (plaintext, TLS, secio)
HANDSHAKE_FAILED = "handshake_failed"  # Noise was chosen but its handshake failed
MUXER_REFUSED = "muxer_refused"  # no stream multiplexer in common (Mplex only)


class RefusalCountingUpgrader(TransportUpgrader):
    """The swarm's :class:`TransportUpgrader`, reporting refused inbound upgrades.

    It shares the original upgrader's negotiators, so the protocols on offer are
    exactly the ones :func:`fedswarm.p2p.host.build_host` chose.
    """

    def __init__(self, inner: TransportUpgrader, on_refused: RefusedHook) -> None:
        # No super().__init__: that would build new negotiators from option maps.
        self.security_multistream = inner.security_multistream
        self.muxer_multistream = inner.muxer_multistream
        self._on_refused = on_refused

    async def upgrade_security(
        self, raw_conn: IRawConnection, is_initiator: bool, peer_id: ID | None = None
    ) -> ISecureConn:
        try:
            return await super().upgrade_security(raw_conn, is_initiator, peer_id)
        except SecurityUpgradeFailure as exc:
            if not is_initiator:
                cause = exc.__cause__
                negotiation = isinstance(cause, MultiselectError | MultiselectClientError)
                reason = SECURITY_REFUSED if negotiation else HANDSHAKE_FAILED
                where = _remote(raw_conn)
                self._report(reason, None, f"inbound connection from {where}: {exc} ({cause})")
            raise

    async def upgrade_connection(self, conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        try:
            return await super().upgrade_connection(conn, peer_id)
        except MuxerUpgradeFailure as exc:
            if not conn.is_initiator:
                detail = f"inbound connection from {_remote(conn)}: {exc} ({exc.__cause__})"
                self._report(MUXER_REFUSED, str(peer_id), detail)
            raise

    def _report(self, reason: str, peer_id: str | None, detail: str) -> None:
        report_refusal(self._on_refused, reason, peer_id, detail)


def report_refusal(on_refused: RefusedHook, reason: str, peer_id: str | None,
                   detail: str) -> None:
    """Count and log a refused connection; a counting problem never changes libp2p's own
    handling of it."""
    try:
        on_refused(reason, peer_id, detail)
        log.warning("refused %s", detail, extra={"condition": reason, "reason": reason})
    except Exception:  # a counter must never break the listener
        log.debug("could not count a refused connection", exc_info=True)


def _remote(conn: IRawConnection | ISecureConn) -> str:
    try:
        address = conn.get_remote_address()
    except Exception:  # some transports cannot say
        address = None
    return f"{address[0]}:{address[1]}" if address else "an unknown address"


__all__ = [
    "HANDSHAKE_FAILED",
    "MUXER_REFUSED",
    "SECURITY_REFUSED",
    "RefusalCountingUpgrader",
    "RefusedHook",
]
