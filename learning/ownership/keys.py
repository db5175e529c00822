"""The member's ownership key: 32 secret random bytes in a file only its owner can read.

The key is the whole secret of the mark (the bits and the projection are derived from
it), so it is treated like the identity key: made once with ``secrets``, written mode
0600, and refused when the file is readable by anyone else. Nothing here ever puts the
key's bytes in a message; ``key_id`` (a hash prefix) is what reports may show.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from fedswarm.learning.errors import OwnershipKeyError

KEY_BYTES = 32
HEADER = "fedswarm-ownership-key-v1"


@dataclass(frozen=True)
class OwnershipKey:
    """The secret; ``repr`` hides it so a log line or a traceback cannot leak it."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise OwnershipKeyError(f"ownership key must be {KEY_BYTES} bytes")

    def __repr__(self) -> str:
        return f"OwnershipKey(id={self.key_id})"

    @property
    def key_id(self) -> str:
        """A public name for the key (not enough to derive anything from)."""
        return hashlib.sha256(b"fedswarm-ownership-id\0" + self.secret).hexdigest()[:12]

    def derive_seed(self, purpose: str) -> int:
        """A 128-bit seed for one use of the key (bits, projection), domain-separated."""
        digest = hashlib.sha256(purpose.encode() + b"\0" + self.secret).digest()
        return int.from_bytes(digest[:16], "big")

    @classmethod
    def generate(cls) -> OwnershipKey:
        return cls(secrets.token_bytes(KEY_BYTES))


def write_key_file(path: Path, key: OwnershipKey | None = None) -> OwnershipKey:
    """Create ``path`` (mode 0600, never overwriting) holding a new or given key."""
    key = key or OwnershipKey.generate()
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise OwnershipKeyError(f"{path}: already exists; not overwriting an ownership key") \
            from None
    except OSError as exc:
        raise OwnershipKeyError(f"{path}: cannot create ownership key ({exc.strerror})") from None
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"{HEADER}\n{key.secret.hex()}\n")
    return key


def read_key_file(path: Path) -> OwnershipKey:
    """Load the key, refusing a file group or others can read or write, or a bad format."""
    path = Path(path)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise OwnershipKeyError(f"{path}: ownership key file not found "
                                "(made by `fedswarm init`)") from None
    except OSError as exc:
        raise OwnershipKeyError(f"{path}: cannot read ownership key ({exc.strerror})") from None
    if mode & 0o077:
        raise OwnershipKeyError(f"{path}: ownership key file has mode {mode:04o}; it must be "
                                f"readable by its owner only (chmod 600 {path})")
    try:
        lines = path.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        raise OwnershipKeyError(f"{path}: unreadable ownership key file") from None
    if len(lines) != 2 or lines[0] != HEADER:
        raise OwnershipKeyError(f"{path}: not an ownership key file (expected {HEADER!r})")
    try:
        secret = bytes.fromhex(lines[1])
    except ValueError:
        raise OwnershipKeyError(f"{path}: ownership key is not hex") from None
    if len(secret) != KEY_BYTES:
        raise OwnershipKeyError(f"{path}: ownership key has {len(secret)} bytes, "
                                f"expected {KEY_BYTES}")
    return OwnershipKey(secret)
