"""Blob framing: header encoding, signature checks, read-exactly and truncation."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
from fedswarm.p2p import framing
from fedswarm.p2p.errors import BlobSignatureError, BlobTruncatedError
from fedswarm.p2p.framing import BlobHeader
from fedswarm.p2p.identity import Identity


def _header(sender: Identity, length: int = 10) -> BlobHeader:
    return BlobHeader(
        federation_id="fed",
        sender=sender.peer_id,
        recipient=Identity.generate().peer_id,
        kind="update",
        round=7,
        length=length,
        sha256=hashlib.sha256(b"x" * length).digest(),
        sent_at=1_700_000_000.5,
    )


class ChunkedReader:
    """A stream stand-in returning at most ``chunk`` bytes per read, then EOF."""

    def __init__(self, data: bytes, chunk: int = 7) -> None:
        self.data = data
        self.pos = 0
        self.chunk = chunk

    async def read(self, n: int) -> bytes:
        take = min(n, self.chunk, len(self.data) - self.pos)
        out = self.data[self.pos : self.pos + take]
        self.pos += take
        return out


async def test_signed_header_round_trips_through_short_reads() -> None:
    ident = Identity.generate()
    header = _header(ident)
    wire = framing.encode_signed_header(header, ident)
    body, sig = await framing.read_signed_header(ChunkedReader(wire, chunk=5).read)
    assert framing.verify_header(body, sig) == header


async def test_header_read_leaves_early_body_bytes_unread_in_the_stream() -> None:
    # A small blob's sender writes its first body bytes right behind the header,
    # in the same write; the receiver must not take them before the header is checked.
    ident = Identity.generate()
    header = _header(ident)
    early = b"early body"
    reader = ChunkedReader(framing.encode_signed_header(header, ident) + early, chunk=2**20)
    body, sig = await framing.read_signed_header(reader.read)
    assert framing.verify_header(body, sig) == header
    assert reader.data[reader.pos :] == early


async def test_tampered_header_fails_signature() -> None:
    ident = Identity.generate()
    wire = framing.encode_signed_header(_header(ident), ident)
    body, sig = await framing.read_signed_header(ChunkedReader(wire).read)
    tampered = body.replace(b'"round":7', b'"round":8')
    assert tampered != body
    with pytest.raises(BlobSignatureError, match="does not verify"):
        framing.verify_header(tampered, sig)


def test_header_signed_by_someone_else_is_refused() -> None:
    claimed, forger = Identity.generate(), Identity.generate()
    header = _header(claimed)
    body = header.to_json()
    wire = framing.encode_signed_header(header, forger)
    sig = wire[-framing.SIGNATURE_BYTES :]
    with pytest.raises(BlobSignatureError):
        framing.verify_header(body, sig)


async def test_oversized_header_is_refused_before_reading_it() -> None:
    wire = framing.HEADER_MAGIC + struct.pack(">I", framing.MAX_HEADER_BYTES + 1)
    with pytest.raises(BlobSignatureError, match="limit"):
        await framing.read_signed_header(ChunkedReader(wire).read)


async def test_wrong_magic_is_refused() -> None:
    with pytest.raises(BlobSignatureError, match="does not start"):
        await framing.read_signed_header(ChunkedReader(b"HTTP/1.1 200 OK\r\n").read)


async def test_read_exactly_reports_truncation_on_clean_eof() -> None:
    reader = ChunkedReader(b"abcdef", chunk=4)
    with pytest.raises(BlobTruncatedError, match="after 6 of 10 bytes"):
        await framing.read_exactly(reader.read, 10)


async def test_read_exactly_joins_short_reads() -> None:
    data = bytes(range(256)) * 40
    assert await framing.read_exactly(ChunkedReader(data, chunk=100).read, len(data)) == data


@pytest.mark.parametrize(
    ("field", "value"),
    [("length", -1), ("round", "seven"), ("sha256", "00"), ("kind", ""), ("length", True)],
)
def test_malformed_header_fields_are_refused(field: str, value: object) -> None:
    doc = json.loads(_header(Identity.generate()).to_json())
    doc[field] = value
    with pytest.raises(BlobSignatureError):
        BlobHeader.from_json(json.dumps(doc).encode())


async def test_reply_round_trip() -> None:
    wire = framing.encode_reply(framing.STATUS_REFUSED, "too_large: 9 bytes")
    assert await framing.read_reply(ChunkedReader(wire, chunk=3).read) == (
        framing.STATUS_REFUSED,
        "too_large: 9 bytes",
    )
