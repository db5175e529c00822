"""Wire format of one blob stream (protocol ``/fedswarm/blob/1.0.0``).

One stream carries one blob::

    sender   -> "FSB1" | u32 header_len | header JSON | 64-byte Ed25519 signature
    receiver -> "FSR1" | u8 status | u16 reason_len | reason      (accept or refuse)
    sender   -> body: exactly header.length bytes
    receiver -> "FSR1" | u8 status | u16 reason_len | reason      (final ack)

libp2p streams have no message boundaries and ``read`` returns at most 64 KiB,
so everything is length-prefixed and read with :func:`read_exactly`. The
receiver refuses oversized or unsigned blobs after the header, before it reads
a single body byte (a small blob's sender may already have written up to one
Yamux window of body behind the header; a large blob's sender has written
none). A sender killed mid-body looks like a clean EOF, so the body's length
and sha256 (both signed) are what detect truncation.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .errors import BlobSignatureError, BlobTruncatedError
from .identity import Identity, verify_signature

BLOB_PROTOCOL = "/fedswarm/blob/1.0.0"
HEADER_MAGIC = b"FSB1"
REPLY_MAGIC = b"FSR1"
MAX_HEADER_BYTES = 4096
SIGNATURE_BYTES = 64
_SIGN_DOMAIN = b"fedswarm-blob-header-v1\x00"
_MAX_KIND_CHARS = 64

MAX_ROUND = 2**31 - 1
"""The largest round number fedswarm accepts from the wire (blob headers, heartbeats).

A round number read from a peer is a claim, and an unbounded one reached places that
never expected it: 2**63 overflowed SQLite's INTEGER on every restart of a daemon that
had adopted it. 2**31 - 1 is the largest value that fits every place a round goes
(SQLite's 64-bit INTEGER, ``round + 1`` in a signed 32-bit integer, a JSON number any
reader parses exactly) with room to spare: at one round a second a federation would
need 68 years to reach it. Anything larger is refused as malformed, wherever it is
parsed; the daemon uses the same constant as its cap when ``[federation] rounds`` is 0.
"""

STATUS_OK = 0
STATUS_REFUSED = 1

# Machine-readable refusal reasons, sent as the first word of a reply's reason
# so the sender can raise the matching exception class.
REASON_TOO_LARGE = "too_large"
REASON_BAD_SIGNATURE = "bad_signature"
REASON_NOT_MEMBER = "not_member"
REASON_WRONG_FEDERATION = "wrong_federation"
REASON_WRONG_RECIPIENT = "wrong_recipient"
REASON_CORRUPT = "corrupt"
REASON_HANDLER_ERROR = "handler_error"
REASON_BUSY = "busy"


@dataclass(frozen=True)
class BlobHeader:
    """Signed description of a blob; every field is covered by the signature."""

    federation_id: str
    sender: str
    recipient: str
    kind: str
    round: int
    length: int
    sha256: bytes
    sent_at: float

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces): the exact bytes that are signed."""
        doc = {
            "federation_id": self.federation_id,
            "sender": self.sender,
            "recipient": self.recipient,
            "kind": self.kind,
            "round": self.round,
            "length": self.length,
            "sha256": self.sha256.hex(),
            "sent_at": self.sent_at,
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> BlobHeader:
        """Parse and type-check header JSON; :class:`BlobSignatureError` if malformed."""
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BlobSignatureError(f"blob header is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise BlobSignatureError("blob header is not a JSON object")
        try:
            header = cls(
                federation_id=_typed(doc, "federation_id", str),
                sender=_typed(doc, "sender", str),
                recipient=_typed(doc, "recipient", str),
                kind=_typed(doc, "kind", str),
                round=_typed(doc, "round", int),
                length=_typed(doc, "length", int),
                sha256=bytes.fromhex(_typed(doc, "sha256", str)),
                sent_at=float(_typed(doc, "sent_at", (int, float))),
            )
        except ValueError as exc:
            raise BlobSignatureError(f"blob header field has a bad value: {exc}") from exc
        if header.length < 0 or header.round < 0 or len(header.sha256) != 32:
            raise BlobSignatureError("blob header has a negative length/round or bad sha256")
        if header.round > MAX_ROUND:
            raise BlobSignatureError(f"blob header round {header.round} is above {MAX_ROUND}")
        if not header.kind or len(header.kind) > _MAX_KIND_CHARS:
            raise BlobSignatureError(f"blob kind must be 1..{_MAX_KIND_CHARS} characters")
        if not math.isfinite(header.sent_at):
            raise BlobSignatureError("blob header sent_at is not finite")
        return header


def _typed(doc: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise BlobSignatureError(f"blob header field {key!r} is missing or has the wrong type")
    return value


def encode_signed_header(header: BlobHeader, identity: Identity) -> bytes:
    """Frame and sign ``header`` with the sender's identity."""
    body = header.to_json()
    if len(body) > MAX_HEADER_BYTES:
        raise BlobSignatureError(f"blob header is {len(body)} bytes, limit {MAX_HEADER_BYTES}")
    signature = identity.sign(_SIGN_DOMAIN + body)
    return HEADER_MAGIC + struct.pack(">I", len(body)) + body + signature


def verify_header(body: bytes, signature: bytes) -> BlobHeader:
    """Parse header JSON and check it was signed by the peer it names as sender."""
    header = BlobHeader.from_json(body)
    if not verify_signature(header.sender, _SIGN_DOMAIN + body, signature):
        raise BlobSignatureError(f"blob header signature does not verify for {header.sender}")
    return header


ReadFn = Callable[[int], Awaitable[bytes]]


async def read_exactly(read: ReadFn, n: int) -> bytes:
    """Read exactly ``n`` bytes; :class:`BlobTruncatedError` on early end of stream.

    ``read`` returns ``b""`` (or raises, translated by the caller) at EOF; a
    short read is never an error by itself since streams return <= 64 KiB.
    """
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = await read(n - got)
        if not chunk:
            raise BlobTruncatedError(f"stream ended after {got} of {n} bytes")
        parts.append(chunk)
        got += len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def read_signed_header(read: ReadFn) -> tuple[bytes, bytes]:
    """Read one framed header, and not a byte more; returns (header JSON, signature).

    The signature is not checked here. The sender of a small blob writes the
    first body bytes right behind the header without waiting for the accept
    (see :mod:`.blob_sender` and docs/network.md), so reading past the frame would pull
    body bytes out of the stream before the header was checked: the prefix
    and then the rest of the frame are read exactly.
    """
    prefix_len = len(HEADER_MAGIC) + 4
    prefix = await read_exactly(read, prefix_len)
    if prefix[:4] != HEADER_MAGIC:
        raise BlobSignatureError("stream does not start with a fedswarm blob header")
    (size,) = struct.unpack(">I", prefix[4:])
    if size > MAX_HEADER_BYTES:
        raise BlobSignatureError(f"blob header is {size} bytes, limit {MAX_HEADER_BYTES}")
    rest = await read_exactly(read, size + SIGNATURE_BYTES)
    return rest[:size], rest[size:]


def encode_reply(status: int, reason: str = "") -> bytes:
    """Accept/refuse/ack frame sent by the receiver."""
    raw = reason.encode("utf-8")[:1024]
    return REPLY_MAGIC + struct.pack(">BH", status, len(raw)) + raw


async def read_reply(read: ReadFn) -> tuple[int, str]:
    """Read one reply frame; returns (status, reason)."""
    prefix = await read_exactly(read, len(REPLY_MAGIC) + 3)
    if prefix[:4] != REPLY_MAGIC:
        raise BlobSignatureError("peer sent a malformed blob reply")
    status, size = struct.unpack(">BH", prefix[4:])
    reason = (await read_exactly(read, size)).decode("utf-8", "replace") if size else ""
    return status, reason
