"""Signed protocol envelopes: one header that binds every message to its round.

Layout (big-endian): magic "FSA1", version u8, step u8, round u64, context sha256 (32),
payload sha256 (32), payload length u64, federation id, group id, sender, recipient
(u16-length UTF-8 each) -- the header -- then the payload, then a 64-byte Ed25519
signature over the header.  Signing the header (which carries the payload digest) costs
the same for a 64 MB ciphertext as for a 32-byte key.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

from fedswarm.secagg.errors import (
    ContextMismatchError,
    MessageFormatError,
    ProtocolViolationError,
    ReplayError,
    SignatureError,
    TamperedPayloadError,
)
from fedswarm.secagg.signing import Signer, Verifier
from fedswarm.secagg.wire import Buffer, Reader, Writer

MAGIC = b"FSA1"
VERSION = 1
SIGNATURE_BYTES = 64
MAX_PAYLOAD_BYTES = 1 << 34  # 16 GiB: far above any real round, stops absurd lengths
NO_CONTEXT = bytes(32)
_FIXED = struct.Struct(">4sBBQ32s32sQ")


class Step(IntEnum):
    """Protocol steps, in round order."""

    CONTEXT = 1  # D -> all: public BFV context
    KEYS = 2  # all -> all: X25519 keys + self-mask commitment
    SHARES = 3  # u -> v: Box-encrypted Shamir shares
    UPLOAD = 4  # u -> A: masked, encrypted contribution
    SURVIVORS = 5  # A -> all: signed survivor set
    CONFIRM = 6  # all -> all: "I saw this survivor set"
    SUM = 7  # A -> D: encrypted sum
    UNMASK = 8  # survivors -> D: shares that remove what does not cancel
    RESULT = 9  # D -> all: the signed average
    ABORT = 10  # A or D -> all: the round cannot finish


@dataclass(frozen=True)
class RoundBinding:
    """What every message of this round must carry."""

    federation_id: str
    group_id: str
    round: int

    def to_bytes(self) -> bytes:
        """Canonical encoding, used to bind mask keys and commitments to the round."""
        w = Writer().text(self.federation_id).text(self.group_id).u64(self.round)
        return w.getvalue()


@dataclass(frozen=True)
class Message:
    """A decoded, signature-checked message."""

    step: Step
    binding: RoundBinding
    sender: str
    recipient: str
    context_hash: bytes
    payload: memoryview  # read-only view into the received bytes: no copy of large uploads
    chunk: int = 0  # a streamed step's chunk index (chunks.py); its prefix is off payload


def encode_message(
    signer: Signer,
    binding: RoundBinding,
    step: Step,
    recipient: str,
    context_hash: bytes,
    payload: bytes | bytearray,
    payload_digest: bytes | None = None,
) -> bytes:
    """Build and sign one message from signer.peer_id to recipient.

    A sender broadcasting one payload to several peers may pass its sha256 once
    (payload_digest) instead of hashing 16 MB again for every recipient.
    """
    if len(context_hash) != 32:
        raise ValueError("context hash must be 32 bytes")
    if payload_digest is None:
        payload_digest = hashlib.sha256(payload).digest()
    elif len(payload_digest) != 32:
        raise ValueError("payload digest must be 32 bytes")
    header = _FIXED.pack(
        MAGIC,
        VERSION,
        int(step),
        binding.round,
        context_hash,
        payload_digest,
        len(payload),
    ) + (
        Writer()
        .text(binding.federation_id)
        .text(binding.group_id)
        .text(signer.peer_id)
        .text(recipient)
        .getvalue()
    )
    signature = signer.sign(header)
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError("signer returned a signature that is not 64 bytes")
    # one copy of the payload: header + payload + signature made two (a 427 MB upload
    # at 80 M values briefly took three times its size)
    return b"".join((header, payload, signature))


@dataclass(frozen=True)
class _Parsed:
    header: bytes
    step: Step
    binding: RoundBinding
    sender: str
    recipient: str
    context_hash: bytes
    payload_digest: bytes
    payload: memoryview
    signature: bytes


def _parse(data: Buffer) -> _Parsed:
    if len(data) < _FIXED.size:
        raise MessageFormatError("message is shorter than its fixed header")
    magic, version, step, round_, context_hash, digest, length = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise MessageFormatError("not a fedswarm secagg message (bad magic)")
    if version != VERSION:
        raise MessageFormatError(f"unsupported message version {version}")
    try:
        step_enum = Step(step)
    except ValueError as exc:
        raise MessageFormatError(f"unknown step {step}") from exc
    if length > MAX_PAYLOAD_BYTES:
        raise MessageFormatError("payload length is absurd")
    view = memoryview(data).toreadonly()
    reader = Reader(view[_FIXED.size :], "message header")
    federation_id, group_id = reader.text(), reader.text()
    sender, recipient = reader.text(), reader.text()
    header_end = _FIXED.size + reader.position
    if len(data) != header_end + length + SIGNATURE_BYTES:
        raise MessageFormatError(
            f"message is {len(data)} bytes, header says {header_end + length + SIGNATURE_BYTES}"
        )
    return _Parsed(
        header=bytes(view[:header_end]),
        step=step_enum,
        binding=RoundBinding(federation_id, group_id, round_),
        sender=sender,
        recipient=recipient,
        context_hash=context_hash,
        payload_digest=digest,
        payload=view[header_end : header_end + length],
        signature=bytes(view[header_end + length :]),
    )


def peek_binding(data: Buffer) -> tuple[RoundBinding, Step, str]:
    """(binding, step, sender) without checking the signature: for routing only."""
    parsed = _parse(data)
    return parsed.binding, parsed.step, parsed.sender


def decode_message(
    data: Buffer,
    expected: RoundBinding,
    me: str,
    verify: Verifier,
    context_hash: bytes | None = None,
) -> Message:
    """Parse and check a message for this member and round, or raise a specific error.

    Order matters: format, then signature (so nothing unauthenticated is trusted), then
    payload digest, then round binding (replays), recipient, context.  A context_hash of
    None means "not known yet"; the caller re-checks once it is.
    """
    parsed = _parse(data)
    if not verify(parsed.sender, parsed.header, parsed.signature):
        raise SignatureError(f"bad signature on {parsed.step.name} from {parsed.sender!r}")
    own_hash = hashlib.sha256(parsed.payload).digest()
    if own_hash != parsed.payload_digest:
        raise TamperedPayloadError(f"{parsed.step.name} payload does not match its digest")
    if parsed.binding.federation_id != expected.federation_id:
        raise ReplayError(f"message from federation {parsed.binding.federation_id!r}")
    if parsed.binding.group_id != expected.group_id:
        raise ReplayError(f"message from group {parsed.binding.group_id!r}")
    if parsed.binding.round != expected.round:
        raise ReplayError(f"message from round {parsed.binding.round}, now {expected.round}")
    if parsed.recipient != me:
        raise ProtocolViolationError(f"message addressed to {parsed.recipient!r}, not to me")
    if parsed.step is Step.CONTEXT and parsed.context_hash != own_hash:
        raise ContextMismatchError("context message hash does not match its payload")
    # ABORT is the one step not bound to the context: an aggregator that never received
    # the decryptor's context must still be able to end its members' waits, and an abort
    # gives A or D nothing they could not get by falling silent.
    if (context_hash is not None and parsed.context_hash != context_hash
            and parsed.step is not Step.ABORT):
        raise ContextMismatchError(f"{parsed.step.name} is bound to another BFV context")
    return Message(
        step=parsed.step,
        binding=parsed.binding,
        sender=parsed.sender,
        recipient=parsed.recipient,
        context_hash=parsed.context_hash,
        payload=parsed.payload,
    )
