"""Exceptions raised by ``fedswarm.p2p``.

Every failure the daemon may want to react to has its own class, so callers can
catch exactly what they can handle (a truncated blob is retried, a rejected one
is not) instead of parsing messages.
"""

from __future__ import annotations


class P2PError(Exception):
    """Base class of every error raised by the p2p layer."""


class RosterError(P2PError):
    """The roster file is missing, malformed, or names an invalid member.

    The message always names the file and the offending key so an operator can
    fix it without reading code.
    """


class IdentityError(P2PError):
    """The identity key is unreadable, corrupt, or readable by group/others."""


class NotAMemberError(P2PError):
    """A peer id is not on the federation roster."""


class NodeNotRunningError(P2PError):
    """The node was used before ``start()`` or after ``stop()``."""


class BlobError(P2PError):
    """Base class of blob-transfer failures."""


class BlobTooLargeError(BlobError):
    """The blob exceeds the receiver's (or our own) ``max_blob_bytes``."""


class BlobTruncatedError(BlobError):
    """The stream ended before the announced number of bytes arrived."""


class BlobCorruptError(BlobError):
    """The bytes arrived but their sha256 differs from the signed header."""


class BlobSignatureError(BlobError):
    """The blob header signature is invalid or the header is malformed."""


class BlobTimeoutError(BlobError):
    """The transfer (or the peer's acknowledgement) did not finish in time."""


class BlobRejectedError(BlobError):
    """The receiver refused the blob; ``reason`` says why (its own words)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"blob rejected by receiver: {reason}")
        self.reason = reason


class BlobBusyError(BlobRejectedError):
    """The receiver had no room for another inbound blob (too many or too many
    bytes in flight) within its wait; retrying later may succeed."""


class GossipRejectedError(P2PError):
    """A gossip envelope failed a signature, roster, federation or age check,
    or a payload to publish is too large."""


class ProtocolNegotiationError(P2PError):
    """The peer did not accept the proposed stream protocol (answered ``na``,
    something else, or nothing in time)."""


class PeerUnreachableError(P2PError):
    """No known address of a roster member answered a dial."""
