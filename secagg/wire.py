"""Strict little binary reader/writer: every read checks bounds, every decode must consume all.

Hand-rolled on struct rather than pickle/msgpack so a hostile peer can only ever make us
raise MessageFormatError, never execute code or allocate unbounded memory.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from fedswarm.secagg.errors import MessageFormatError

MAX_STRING_BYTES = 1024
MAX_LIST_ITEMS = 4096

Buffer = bytes | memoryview  # what decoders accept: received messages are read in place


class Writer:
    """Appends fixed-width big-endian fields and length-prefixed blobs."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> Writer:
        self._parts.append(struct.pack(">B", value))
        return self

    def u16(self, value: int) -> Writer:
        self._parts.append(struct.pack(">H", value))
        return self

    def u32(self, value: int) -> Writer:
        self._parts.append(struct.pack(">I", value))
        return self

    def u64(self, value: int) -> Writer:
        self._parts.append(struct.pack(">Q", value))
        return self

    def f64(self, value: float) -> Writer:
        self._parts.append(struct.pack(">d", value))
        return self

    def raw(self, data: Buffer) -> Writer:
        self._parts.append(bytes(data))
        return self

    def text(self, value: str) -> Writer:
        data = value.encode("utf-8")
        if len(data) > MAX_STRING_BYTES:
            raise MessageFormatError("string field too long")
        return self.u16(len(data)).raw(data)

    def blob(self, data: Buffer) -> Writer:
        return self.u32(len(data)).raw(data)

    def texts(self, values: list[str] | tuple[str, ...]) -> Writer:
        self.u16(len(values))
        for value in values:
            self.text(value)
        return self

    def blobs(self, values: Sequence[Buffer]) -> Writer:
        self.u32(len(values))
        for value in values:
            self.blob(value)
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads what Writer wrote; any shortfall or leftover raises MessageFormatError."""

    def __init__(self, data: Buffer, what: str = "message") -> None:
        self._view = memoryview(data)
        self._pos = 0
        self._what = what

    def _take(self, n: int) -> memoryview:
        if n < 0 or self._pos + n > len(self._view):
            raise MessageFormatError(f"{self._what} is truncated")
        chunk = self._view[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def u8(self) -> int:
        return int(struct.unpack(">B", self._take(1))[0])

    def u16(self) -> int:
        return int(struct.unpack(">H", self._take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self._take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self._take(8))[0])

    def f64(self) -> float:
        return float(struct.unpack(">d", self._take(8))[0])

    def raw(self, n: int) -> bytes:
        return bytes(self._take(n))

    def text(self) -> str:
        n = self.u16()
        if n > MAX_STRING_BYTES:
            raise MessageFormatError(f"{self._what}: string field too long")
        try:
            return bytes(self._take(n)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MessageFormatError(f"{self._what}: string is not UTF-8") from exc

    def raw_view(self, n: int) -> memoryview:
        """n bytes as a view into the data: the caller copies what it keeps."""
        return self._take(n)

    def blob(self) -> bytes:
        return bytes(self._take(self.u32()))

    def texts(self) -> tuple[str, ...]:
        n = self.u16()
        if n > MAX_LIST_ITEMS:
            raise MessageFormatError(f"{self._what}: list too long")
        return tuple(self.text() for _ in range(n))

    def blobs(self) -> list[bytes]:
        n = self.u32()
        if n > len(self._view) - self._pos:
            raise MessageFormatError(f"{self._what}: blob count exceeds the data")
        return [self.blob() for _ in range(n)]

    def blob_views(self) -> list[memoryview]:
        """Like blobs(), but views into the data: no copy of a 64 MB upload."""
        n = self.u32()
        if n > len(self._view) - self._pos:
            raise MessageFormatError(f"{self._what}: blob count exceeds the data")
        return [self._take(self.u32()) for _ in range(n)]

    @property
    def position(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return len(self._view) - self._pos

    def finish(self) -> None:
        """Assert everything was consumed: trailing bytes mean a malformed message."""
        if self._pos != len(self._view):
            raise MessageFormatError(f"{self._what} has {self.remaining()} trailing bytes")
