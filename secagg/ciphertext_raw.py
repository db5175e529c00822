"""BFV ciphertext chunks as raw numpy coefficients, read from and written in TenSEAL's format.

Why: the aggregator only adds ciphertexts.  Loading each chunk through TenSEAL costs a
zstd decompression plus a SEAL object per 4096 values, and serialising the sum costs a
zstd compression of incompressible data (together about 0.16 s per 4 M values, most of
A's extra CPU).  A BFV ciphertext at the data level is 2 polynomials x N coefficients x 1
RNS modulus q, not in NTT form, and adding two is coefficient-wise addition mod q -- the
same thing SEAL's Evaluator::add does -- so A can add numpy uint64 arrays instead.

A chunk is what `BFVVector.serialize()` writes: a two-field protobuf (the vector size,
then one SEAL stream).  The SEAL stream is a 16-byte header (magic 0xA15E, compression
mode, total size) and a body: parms_id, is_ntt_form, size, N, coefficient-modulus count,
scale, correction factor, then the coefficient DynArray (its own header, a u64 count and
the uint64 words).  TenSEAL compresses the body with zstd; because ciphertext words are
uniform mod q, zstd stores them as raw blocks, which we read without a zstd library.  A
chunk with a really compressed block, another layout, another level (parms_id), another
shape or an unreduced coefficient raises CiphertextLayoutError: nothing bad is ever added.
The sum is written back with SEAL's compression mode "none", which SEAL (and so TenSEAL
on the decryptor) loads as it is.

Learning the layout: the expected body header is taken from a ciphertext that this
process encrypts itself under the round's public context, so every field we compare
against comes from SEAL, not from a peer.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
import tenseal as ts
import tenseal.sealapi
from fedswarm.secagg.errors import CiphertextLayoutError

SEAL_MAGIC = 0xA15E
SEAL_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr, reserved, size
COMPR_NONE = 0
COMPR_ZSTD = 2
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_META = struct.Struct("<32sBQQQdQ")  # parms_id, is_ntt_form, size, N, moduli, scale, correction
_PROTO_SIZES_TAG = 0x0A  # field 1, length-delimited (packed vector sizes)
_PROTO_CIPHER_TAG = 0x12  # field 2, length-delimited (one SEAL ciphertext stream)
MAX_KNOWN_HEADS = 8  # honest chunks have two heads per round: full and last


class CompressedBlockError(CiphertextLayoutError):
    """zstd really compressed this ciphertext: its words are not uniform mod a ~60-bit q."""


@dataclass(frozen=True, eq=False)
class CiphertextLayout:
    """What every chunk of this context must look like, learned from SEAL itself."""

    body_prefix: bytes  # metadata + coefficient array header, byte for byte
    seal_version: tuple[int, int]
    n_words: int  # polynomials x moduli x N
    moduli: tuple[int, ...]  # the data level's RNS primes q_j
    modulus_row: np.ndarray  # q_j for every word, in SEAL's order (poly, modulus, coefficient)
    _known_heads: dict[bytes, int] = field(default_factory=dict, repr=False)  # head -> size

    @classmethod
    def for_context(cls, context: ts.Context) -> CiphertextLayout:
        data = context.seal_context().data
        level = data.first_context_data()
        moduli = tuple(m.value() for m in level.parms().coeff_modulus())
        probe = ts.bfv_vector(context, [0]).serialize()
        version, _, body = _seal_stream(probe)  # CompressedBlockError: q too small for raw
        parms_id, ntt, size, degree, count, _, _ = _META.unpack_from(body)
        expected_id = struct.pack("<4Q", *data.first_parms_id())
        if parms_id != expected_id or ntt != 0 or size != 2 or count != len(moduli):
            raise CiphertextLayoutError("SEAL wrote a ciphertext this module does not expect")
        n_words = size * degree * count
        prefix_len = len(body) - 8 * n_words
        if prefix_len <= _META.size:
            raise CiphertextLayoutError("SEAL ciphertext body is shorter than its metadata")
        row = np.tile(np.repeat(np.asarray(moduli, dtype=np.uint64), degree), size)
        row.flags.writeable = False
        return cls(bytes(body[:prefix_len]), version, n_words, moduli, row)

    def coefficients(self, chunk: bytes | memoryview) -> tuple[int, np.ndarray]:
        """(vector size, read-only uint64 view of the 2 x N coefficients) of one chunk.

        Every byte before the coefficients (protobuf, SEAL and zstd headers, metadata) is
        the same for all honest chunks of one vector size, and the parse depends on those
        bytes only, so a head that passed the full parse once is remembered and the next
        chunk with the very same head only needs its coefficients checked.
        """
        data_start = len(chunk) - 8 * self.n_words
        if data_start > 0:
            size = self._known_heads.get(bytes(memoryview(chunk)[:data_start]))
            if size is not None:
                words = np.frombuffer(chunk, dtype="<u8", count=self.n_words, offset=data_start)
                return size, self._reduced(words)
        size, words = self._parse(chunk)
        if data_start > 0 and len(self._known_heads) < MAX_KNOWN_HEADS:
            tail = np.frombuffer(chunk, dtype="<u8", count=self.n_words, offset=data_start)
            if _address(tail) == _address(words):
                # the words are the chunk's last bytes, read as data and never interpreted
                # (no compression, or one raw zstd block and no checksum): only the head
                # decided the parse, so the same head always parses the same way
                self._known_heads[bytes(memoryview(chunk)[:data_start])] = size
        return size, words

    def _reduced(self, words: np.ndarray) -> np.ndarray:
        if np.any(words >= self.modulus_row):
            raise CiphertextLayoutError("ciphertext coefficient is not reduced mod q")
        return words

    def _parse(self, chunk: bytes | memoryview) -> tuple[int, np.ndarray]:
        version, vector_size, body = _seal_stream(chunk)
        if version != self.seal_version:
            raise CiphertextLayoutError(f"SEAL version {version}, expected {self.seal_version}")
        prefix = len(self.body_prefix)
        if len(body) != prefix + 8 * self.n_words:
            raise CiphertextLayoutError(
                f"ciphertext body is {len(body)} bytes, expected {prefix + 8 * self.n_words}"
            )
        if body[:prefix] != self.body_prefix:
            raise CiphertextLayoutError(_which_field_differs(body, self.body_prefix))
        words = np.frombuffer(body, dtype="<u8", count=self.n_words, offset=prefix)
        return vector_size, self._reduced(words)

    def encode(self, vector_size: int, words: np.ndarray) -> bytes:
        """One chunk in TenSEAL's format, SEAL stream uncompressed (compression mode none)."""
        data = np.ascontiguousarray(words, dtype="<u8").tobytes()
        stream_size = SEAL_HEADER.size + len(self.body_prefix) + len(data)
        major, minor = self.seal_version
        header = SEAL_HEADER.pack(
            SEAL_MAGIC, SEAL_HEADER.size, major, minor, COMPR_NONE, 0, stream_size
        )
        sizes = _varint(vector_size)
        return b"".join(
            (
                bytes([_PROTO_SIZES_TAG]),
                _varint(len(sizes)),
                sizes,
                bytes([_PROTO_CIPHER_TAG]),
                _varint(stream_size),
                header,
                self.body_prefix,
                data,
            )
        )


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def _which_field_differs(body: memoryview | bytes, expected: bytes) -> str:
    got = _META.unpack_from(body)
    want = _META.unpack_from(expected)
    names = (
        "parms_id (level/parameters)",
        "is_ntt_form",
        "size",
        "poly degree",
        "coefficient moduli",
        "scale",
        "correction factor",
    )
    for name, a, b in zip(names, got, want, strict=True):
        if a != b:
            return f"ciphertext {name} is {a!r}, expected {b!r}"
    return "ciphertext coefficient array header differs from this context's"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Cursor:
    """Bounds-checked reads over a memoryview; every failure is a CiphertextLayoutError."""

    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise CiphertextLayoutError("ciphertext chunk is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        value = 0
        for shift in range(0, 64, 7):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise CiphertextLayoutError("varint is too long")

    def done(self) -> bool:
        return self.pos == len(self.data)


def _seal_stream(chunk: bytes | memoryview) -> tuple[tuple[int, int], int, memoryview]:
    """Unwrap TenSEAL's protobuf and SEAL's header: (SEAL version, vector size, body)."""
    proto = _Cursor(memoryview(chunk))
    if proto.byte() != _PROTO_SIZES_TAG:
        raise CiphertextLayoutError("chunk is not a serialised BFV vector")
    sizes = _Cursor(proto.take(proto.varint()))
    vector_size = sizes.varint()
    if not sizes.done():
        raise CiphertextLayoutError("a chunk must hold exactly one ciphertext")
    if proto.byte() != _PROTO_CIPHER_TAG:
        raise CiphertextLayoutError("chunk is not a serialised BFV vector")
    stream = proto.take(proto.varint())
    if not proto.done():
        raise CiphertextLayoutError("chunk carries more than one ciphertext or trailing bytes")
    if len(stream) < SEAL_HEADER.size:
        raise CiphertextLayoutError("SEAL stream is shorter than its header")
    magic, header_size, major, minor, compr, reserved, size = SEAL_HEADER.unpack_from(stream)
    if magic != SEAL_MAGIC or header_size != SEAL_HEADER.size or reserved != 0:
        raise CiphertextLayoutError("not a SEAL stream (bad header)")
    if size != len(stream):
        raise CiphertextLayoutError(f"SEAL stream claims {size} bytes but has {len(stream)}")
    body = stream[SEAL_HEADER.size :]
    if compr == COMPR_ZSTD:
        body = _zstd_raw_blocks(body)
    elif compr != COMPR_NONE:
        raise CiphertextLayoutError(f"unsupported SEAL compression mode {compr}")
    return (major, minor), vector_size, body


def _zstd_raw_blocks(frame: memoryview) -> memoryview:
    """The content of a zstd frame made of raw/RLE blocks (RFC 8878), without a zstd library.

    zstd stores data it cannot compress as raw blocks, and BFV ciphertext words are
    uniform mod q.  A frame with a really compressed block is refused, never guessed at.
    """
    cursor = _Cursor(frame)
    if bytes(cursor.take(4)) != ZSTD_MAGIC:
        raise CiphertextLayoutError("SEAL stream says zstd but holds no zstd frame")
    descriptor = cursor.byte()
    fcs_flag, single_segment = descriptor >> 6, (descriptor >> 5) & 1
    checksum, dict_flag = (descriptor >> 2) & 1, descriptor & 3
    if descriptor & 0x08 or dict_flag:
        raise CiphertextLayoutError("zstd frame uses a dictionary or reserved bits")
    if not single_segment:
        cursor.take(1)  # window descriptor
    fcs_bytes = (1 if single_segment else 0, 2, 4, 8)[fcs_flag]
    cursor.take(fcs_bytes)
    parts: list[memoryview] = []
    last = 0
    while not last:
        header = int.from_bytes(cursor.take(3), "little")
        last, block_type, size = header & 1, (header >> 1) & 3, header >> 3
        if block_type == 0:
            parts.append(cursor.take(size))
        elif block_type == 1:
            parts.append(memoryview(bytes(cursor.take(1)) * size))
        else:
            raise CompressedBlockError("zstd frame holds a compressed block; expected raw data")
    if checksum:
        cursor.take(4)  # xxhash of the content; the signed payload digest already covers it
    if not cursor.done():
        raise CiphertextLayoutError("trailing bytes after the zstd frame")
    if len(parts) == 1:
        return parts[0]
    return memoryview(b"".join(parts))
