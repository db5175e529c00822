"""Typed payloads of each protocol step and their strict encoders/decoders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from fedswarm.secagg.errors import MessageFormatError, VectorShapeError
from fedswarm.secagg.shamir import SHARE_Y_BYTES, Share
from fedswarm.secagg.wire import Buffer, Reader, Writer

KEY_BYTES = 32
DIGEST_BYTES = 32


@dataclass(frozen=True)
class ContextPayload:
    """D's public BFV context plus the parameters it claims, so members can refuse it."""

    poly_modulus_degree: int
    plain_modulus: int
    coeff_mod_bit_sizes: tuple[int, ...]
    context: bytes

    def encode(self) -> bytes:
        w = Writer().u32(self.poly_modulus_degree).u64(self.plain_modulus)
        w.u8(len(self.coeff_mod_bit_sizes))
        for bits in self.coeff_mod_bit_sizes:
            w.u8(bits)
        return w.blob(self.context).getvalue()

    @classmethod
    def decode(cls, data: Buffer) -> ContextPayload:
        r = Reader(data, "context payload")
        n, p = r.u32(), r.u64()
        bits = tuple(r.u8() for _ in range(r.u8()))
        context = r.blob()
        r.finish()
        return cls(n, p, bits, context)


@dataclass(frozen=True)
class KeysPayload:
    """X25519 keys for share encryption and masking, and the self-mask seed commitment.

    v3 adds the member's weight class and range shift (quantise.weight_class,
    quantise.range_shift), one byte each at the end; a decoder told which protocol it
    speaks refuses the other's layout.
    """

    share_public_key: bytes
    mask_public_key: bytes
    seed_commitment: bytes
    n_values: int
    weight_class: int | None = None
    range_shift: int | None = None

    def encode(self) -> bytes:
        w = (
            Writer()
            .raw(self.share_public_key)
            .raw(self.mask_public_key)
            .raw(self.seed_commitment)
            .u64(self.n_values)
        )
        if self.weight_class is not None:
            w.u8(self.weight_class).u8(self.range_shift or 0)
        return w.getvalue()

    @classmethod
    def decode(cls, data: Buffer, packed: bool = False) -> KeysPayload:
        r = Reader(data, "keys payload")
        keys = (r.raw(KEY_BYTES), r.raw(KEY_BYTES), r.raw(DIGEST_BYTES), r.u64())
        classes = (r.u8(), r.u8()) if packed else (None, None)
        r.finish()
        return cls(*keys, *classes)


@dataclass(frozen=True)
class ShareBundle:
    """The recipient's shares of the sender's mask private key and self-mask seed."""

    mask_key_share: Share
    seed_share: Share

    def encode(self) -> bytes:
        return self.mask_key_share.to_bytes() + self.seed_share.to_bytes()

    @classmethod
    def decode(cls, data: Buffer) -> ShareBundle:
        size = 2 + SHARE_Y_BYTES
        if len(data) != 2 * size:
            raise MessageFormatError("share bundle has the wrong length")
        return cls(Share.from_bytes(data[:size]), Share.from_bytes(data[size:]))


@dataclass(frozen=True)
class UploadPayload:
    """A member's masked, encrypted contribution and the mask set it used.

    Decoded chunks are views into the received message (A adds them in place and
    drops the message), so a 64 MB upload is never copied on the way in.
    """

    mask_set: tuple[str, ...]
    n_values: int
    chunks: Sequence[Buffer]

    def encode(self) -> bytes:
        return Writer().texts(self.mask_set).u64(self.n_values).blobs(self.chunks).getvalue()

    @classmethod
    def decode(cls, data: Buffer, slot_count: int) -> UploadPayload:
        r = Reader(data, "upload payload")
        out = cls(r.texts(), r.u64(), r.blob_views())
        r.finish()
        check_chunk_count(out.n_values, len(out.chunks), slot_count)
        return out

    @classmethod
    def decode_chunk(cls, data: Buffer, ciphertexts: int) -> UploadPayload:
        """One streamed UPLOAD chunk's body (chunks.py): the same layout, carrying only
        the ciphertexts that chunk's index fixes (chunks.chunk_ciphertexts)."""
        r = Reader(data, "upload chunk")
        out = cls(r.texts(), r.u64(), r.blob_views())
        r.finish()
        if len(out.chunks) != ciphertexts:
            raise VectorShapeError(
                f"upload chunk carries {len(out.chunks)} ciphertexts, not {ciphertexts}"
            )
        return out


def check_chunk_count(n_values: int, n_chunks: int, slot_count: int) -> None:
    """A vector of n_values needs exactly ceil(n_values / slots) ciphertexts."""
    if n_values < 2 or n_chunks != -(-n_values // slot_count):
        raise VectorShapeError(f"{n_chunks} ciphertexts cannot hold {n_values} values")


@dataclass(frozen=True)
class SurvivorsPayload:
    """A's verdict: who is in the sum (survivors) out of who exchanged keys (mask set)."""

    survivors: tuple[str, ...]
    mask_set: tuple[str, ...]

    @property
    def dropped(self) -> tuple[str, ...]:
        return tuple(p for p in self.mask_set if p not in self.survivors)

    def encode(self) -> bytes:
        return Writer().texts(self.survivors).texts(self.mask_set).getvalue()

    @classmethod
    def decode(cls, data: Buffer) -> SurvivorsPayload:
        r = Reader(data, "survivors payload")
        out = cls(r.texts(), r.texts())
        r.finish()
        if len(set(out.survivors)) != len(out.survivors) or not set(out.survivors) <= set(
            out.mask_set
        ):
            raise MessageFormatError("survivors must be distinct members of the mask set")
        return out


@dataclass(frozen=True)
class DigestPayload:
    """A bare sha256 (CONFIRM carries the digest of the survivors payload it saw)."""

    digest: bytes

    def encode(self) -> bytes:
        return self.digest

    @classmethod
    def decode(cls, data: Buffer) -> DigestPayload:
        if len(data) != DIGEST_BYTES:
            raise MessageFormatError("digest payload must be 32 bytes")
        return cls(bytes(data))


@dataclass(frozen=True)
class SumPayload:
    """A's encrypted sum, bound to the survivors payload it sums."""

    survivors_digest: bytes
    n_values: int
    chunks: Sequence[Buffer]

    def encode(self) -> bytes:
        return Writer().raw(self.survivors_digest).u64(self.n_values).blobs(self.chunks).getvalue()

    @classmethod
    def decode(cls, data: Buffer, slot_count: int, views: bool = False) -> SumPayload:
        """views=True: chunks are views into data (D copies one segment at a time)."""
        r = Reader(data, "sum payload")
        digest, n_values = r.raw(DIGEST_BYTES), r.u64()
        chunks: Sequence[Buffer] = r.blob_views() if views else r.blobs()
        out = cls(digest, n_values, chunks)
        r.finish()
        check_chunk_count(out.n_values, len(out.chunks), slot_count)
        return out

    @classmethod
    def decode_chunk(cls, data: Buffer, ciphertexts: int) -> SumPayload:
        """One streamed SUM chunk's body: the ciphertexts its index fixes, as views."""
        r = Reader(data, "sum chunk")
        out = cls(r.raw(DIGEST_BYTES), r.u64(), r.blob_views())
        r.finish()
        if len(out.chunks) != ciphertexts:
            raise VectorShapeError(
                f"sum chunk carries {len(out.chunks)} ciphertexts, not {ciphertexts}"
            )
        return out


SEED_SHARE = 0
MASK_KEY_SHARE = 1


@dataclass(frozen=True)
class RevealedShare:
    """One share sent to D: of `owner`'s self-mask seed or of its mask private key."""

    owner: str
    kind: int  # SEED_SHARE or MASK_KEY_SHARE
    share: Share


@dataclass(frozen=True)
class UnmaskPayload:
    """A survivor's shares for D, bound to the survivors payload they answer."""

    survivors_digest: bytes
    shares: tuple[RevealedShare, ...]

    def encode(self) -> bytes:
        w = Writer().raw(self.survivors_digest).u16(len(self.shares))
        for item in self.shares:
            w.text(item.owner).u8(item.kind).raw(item.share.to_bytes())
        return w.getvalue()

    @classmethod
    def decode(cls, data: Buffer) -> UnmaskPayload:
        r = Reader(data, "unmask payload")
        digest = r.raw(DIGEST_BYTES)
        items = []
        for _ in range(r.u16()):
            owner, kind = r.text(), r.u8()
            if kind not in (SEED_SHARE, MASK_KEY_SHARE):
                raise MessageFormatError(f"unknown share kind {kind}")
            items.append(RevealedShare(owner, kind, Share.from_bytes(r.raw(2 + SHARE_Y_BYTES))))
        r.finish()
        return cls(digest, tuple(items))


@dataclass(frozen=True)
class ResultPayload:
    """D's published average (float32) and who it covers."""

    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    total_weight: float
    average: np.ndarray

    def encode(self) -> bytes:
        data = np.ascontiguousarray(self.average, dtype="<f4")  # no copy when already f4
        w = Writer().texts(self.survivors).texts(self.dropped).f64(self.total_weight)
        header = w.u64(self.average.size).getvalue()
        return b"".join((header, data.data.cast("B")))  # the one copy

    @classmethod
    def decode(cls, data: Buffer) -> ResultPayload:
        r = Reader(data, "result payload")
        survivors, dropped, total = r.texts(), r.texts(), r.f64()
        n = r.u64()
        if n * 4 != r.remaining():
            raise VectorShapeError(f"result claims {n} values but carries {r.remaining()} bytes")
        # one copy, out of the message (r.raw would add a second, 320 MB at 80 M values)
        average = np.frombuffer(r.raw_view(4 * n), dtype="<f4").astype(np.float32)
        r.finish()
        if not np.all(np.isfinite(average)) or not total > 0:
            raise MessageFormatError("result contains non-finite values or no weight")
        return cls(survivors, dropped, total, average)

    @classmethod
    def decode_chunk(cls, data: Buffer, n_values: int) -> ResultPayload:
        """One streamed RESULT chunk's body: the n_values its index fixes (chunks.py)."""
        r = Reader(data, "result chunk")
        survivors, dropped, total = r.texts(), r.texts(), r.f64()
        n = r.u64()
        if n != n_values or n * 4 != r.remaining():
            raise VectorShapeError(
                f"result chunk claims {n} values with {r.remaining()} bytes; its index "
                f"fixes {n_values}"
            )
        average = np.frombuffer(r.raw_view(4 * n), dtype="<f4")  # a view: the caller copies
        r.finish()
        if not np.all(np.isfinite(average)) or not total > 0:
            raise MessageFormatError("result contains non-finite values or no weight")
        return cls(survivors, dropped, total, average)


ABORT_NOT_ENOUGH_SURVIVORS = 1
ABORT_OTHER = 2


@dataclass(frozen=True)
class AbortPayload:
    """Why A or D gave up on the round."""

    code: int
    reason: str

    def encode(self) -> bytes:
        return Writer().u8(self.code).text(self.reason[:500]).getvalue()

    @classmethod
    def decode(cls, data: Buffer) -> AbortPayload:
        r = Reader(data, "abort payload")
        out = cls(r.u8(), r.text())
        r.finish()
        return out
