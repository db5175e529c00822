"""Which signed headers a node accepts (the one rule blobs and messages share), and
what a refused sender raises.

A header whose signature verified is still refused when the connected peer is not on
the roster, when it names someone else as sender, another federation, another
recipient, or more bytes than the receiver allows. The reason's first word is a
``framing.REASON_*`` code, so a refused sender can raise the matching error and the
receiver can count it.
"""

from __future__ import annotations

from . import framing
from .errors import (
    BlobBusyError,
    BlobCorruptError,
    BlobError,
    BlobRejectedError,
    BlobSignatureError,
    BlobTooLargeError,
)
from .framing import BlobHeader
from .roster import Roster


def header_refusal(
    header: BlobHeader, remote: str, roster: Roster, me: str, max_bytes: int
) -> str | None:
    """Why ``header`` from connected peer ``remote`` is refused, or None to accept it."""
    if not roster.is_member(remote):
        return f"{framing.REASON_NOT_MEMBER}: {remote}"
    if header.sender != remote:
        return f"{framing.REASON_BAD_SIGNATURE}: header sender is not the connected peer"
    if header.federation_id != roster.federation_id:
        return f"{framing.REASON_WRONG_FEDERATION}: {header.federation_id}"
    if header.recipient != me:
        return f"{framing.REASON_WRONG_RECIPIENT}: {header.recipient}"
    if header.length > max_bytes:
        return f"{framing.REASON_TOO_LARGE}: {header.length} bytes, limit {max_bytes}"
    return None


def refusal_error(reason: str) -> BlobError:
    """The error a refused sender raises, chosen by the reason's ``REASON_*`` code."""
    code = reason.split(":", 1)[0]
    if code == framing.REASON_TOO_LARGE:
        return BlobTooLargeError(f"receiver refused: {reason}")
    if code == framing.REASON_BAD_SIGNATURE:
        return BlobSignatureError(f"receiver refused: {reason}")
    if code == framing.REASON_CORRUPT:
        return BlobCorruptError(f"receiver refused: {reason}")
    if code == framing.REASON_BUSY:
        return BlobBusyError(reason)
    return BlobRejectedError(reason)
