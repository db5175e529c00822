"""A streamed step's chunks: how many there are, and the signed prefix each one carries.

Why: an 80 M-value UPLOAD was one 427 MB signed message, held whole by the member that
built it and by the aggregator that received it.  Sent as chunks of
``params.stream_chunk_ciphertexts`` ciphertexts, each its own signed message, a member
holds one chunk in flight and the aggregator checks every chunk as it arrives.

Each chunk's payload starts with (index u32, count u32).  The payload's sha256 is in the
signed header, which also binds federation, group, round, step, sender, recipient and
context, so a chunk cannot move to another round, sender or step, and its index and
count cannot be edited.  The count is not the sender's to choose: it follows from the
vector length every member published in KEYS (``stream_chunk_count``), and the inbox
refuses any other (``ChunkCountError``), any index at or past it, and any index other
than the next one expected from that sender (``ChunkOrderError``: a duplicate or a
reordered chunk ends that sender's stream; the aggregator then counts it as dropped).
"""

from __future__ import annotations

import struct

from fedswarm.secagg.errors import ChunkCountError, MessageFormatError
from fedswarm.secagg.wire import Buffer

PREFIX = struct.Struct(">II")


def ciphertext_count(n_slots: int, slot_count: int) -> int:
    """BFV ciphertexts a vector of n_slots slots takes."""
    return -(-n_slots // slot_count)


def stream_chunk_count(n_slots: int, slot_count: int, per_chunk: int) -> int:
    """Chunk messages of UPLOAD, SUM or RESULT for a vector of n_slots slots (at least one)."""
    return max(1, -(-ciphertext_count(n_slots, slot_count) // per_chunk))


def chunk_ciphertexts(index: int, n_slots: int, slot_count: int, per_chunk: int) -> int:
    """Ciphertexts chunk index carries: per_chunk, except the last, which has the rest."""
    total = ciphertext_count(n_slots, slot_count)
    return max(0, min(per_chunk, total - index * per_chunk))


def add_prefix(index: int, count: int, body: bytes | bytearray) -> bytearray:
    """The chunk's payload: prefix then body (one copy of the body)."""
    if not 0 <= index < count:
        raise ChunkCountError(f"chunk {index} of {count}")
    out = bytearray(PREFIX.pack(index, count))
    out += body
    return out


def read_prefix(payload: Buffer) -> tuple[int, int, memoryview]:
    """(index, count, body) of a chunk payload; the body is a view, not a copy."""
    if len(payload) < PREFIX.size:
        raise MessageFormatError("chunk is shorter than its index and count")
    index, count = PREFIX.unpack_from(payload)
    return int(index), int(count), memoryview(payload)[PREFIX.size :]


def check_chunk(index: int, count: int, expected_count: int) -> None:
    """Refuse a count other than the one the group's vector length fixes, or a bad index."""
    if count != expected_count:
        raise ChunkCountError(
            f"chunk claims {count} chunks; the vector agreed in KEYS takes {expected_count}"
        )
    if index >= count:
        raise ChunkCountError(f"chunk index {index} is past the {count} chunks")


def chunk_slots(index: int, n_slots: int, slot_count: int, per_chunk: int) -> tuple[int, int]:
    """[start, stop) of the slots chunk index covers (SUM and RESULT follow UPLOAD's cut)."""
    start = index * per_chunk * slot_count
    return start, min(start + per_chunk * slot_count, n_slots)


def result_chunk_values(
    index: int, n_params: int, n_slots: int, slot_count: int, per_chunk: int, fields: int
) -> int:
    """Coordinates RESULT chunk index carries: its slots' fields; the last chunk's end at
    n_params (its final slot is the weight slot, and packing pads the slot before it)."""
    start, stop = chunk_slots(index, n_slots, slot_count, per_chunk)
    if stop == n_slots:
        return n_params - start * fields
    return (stop - start) * fields
