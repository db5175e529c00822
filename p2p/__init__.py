"""fedswarm.p2p: libp2p host, identity, roster authorisation, discovery,
membership gossip and blob transfer, behind an asyncio interface."""

from .errors import (
    BlobCorruptError,
    BlobError,
    BlobRejectedError,
    BlobSignatureError,
    BlobTimeoutError,
    BlobTooLargeError,
    BlobTruncatedError,
    GossipRejectedError,
    IdentityError,
    NodeNotRunningError,
    NotAMemberError,
    P2PError,
    PeerUnreachableError,
    ProtocolNegotiationError,
    RosterError,
)
from .framing import BlobHeader
from .identity import Identity, public_key_from_peer_id, verify_signature
from .roster import Member, Roster

__all__ = [
    "BlobCorruptError",
    "BlobError",
    "BlobHeader",
    "BlobRejectedError",
    "BlobSignatureError",
    "BlobTimeoutError",
    "BlobTooLargeError",
    "BlobTruncatedError",
    "GossipRejectedError",
    "Identity",
    "IdentityError",
    "Member",
    "NodeNotRunningError",
    "NotAMemberError",
    "P2PError",
    "PeerUnreachableError",
    "ProtocolNegotiationError",
    "Roster",
    "RosterError",
    "public_key_from_peer_id",
    "verify_signature",
]
