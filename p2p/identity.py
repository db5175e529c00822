"""The node's persistent Ed25519 identity.

The libp2p peer id is derived from this key, so the key file *is* the
organisation's membership credential: it is written atomically with mode 0600
and refused on load when group or others can read it (like ssh does), because
a leaked key lets anyone impersonate the organisation in the federation.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import base58
import nacl.exceptions
import nacl.signing

from .errors import IdentityError

_FILE_TAG = "fedswarm-ed25519-seed-v1"
# Protobuf PublicKey{Type=Ed25519(1), Data=<32 bytes>}, as libp2p encodes it.
_ED25519_PROTO_PREFIX = bytes([0x08, 0x01, 0x12, 0x20])
# Identity multihash: code 0x00, length 36 (the protobuf above).
_IDENTITY_MULTIHASH_PREFIX = bytes([0x00, 0x24])


def owner_only_problem(path: Path, mode: int, what: str) -> str | None:
    """Why a secret file with ``st_mode`` ``mode`` must be refused, or ``None`` if it is private.

    A file that group or others may access in any way is refused, like ssh does with
    a private key. Shared by every secret fedswarm loads (the identity key here, the
    dashboard's API token in ``daemon/cli.py``) so they are checked alike.
    """
    bits = stat.S_IMODE(mode)
    if bits & 0o077:
        return (
            f"{path}: {what} mode is {bits:04o}; it must not be "
            f"accessible by group or others (run: chmod 600 {path})"
        )
    return None


class Identity:
    """An Ed25519 key pair held as its 32-byte seed."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise IdentityError(f"Ed25519 seed must be 32 bytes, got {len(seed)}")
        self._signing_key = nacl.signing.SigningKey(seed)
        self.public_key: bytes = bytes(self._signing_key.verify_key)
        self.peer_id: str = peer_id_from_public_key(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity (from the OS CSPRNG)."""
        return cls(os.urandom(32))

    @property
    def seed(self) -> bytes:
        """The 32 secret bytes; needed to build the libp2p key pair."""
        return bytes(self._signing_key)

    @classmethod
    def load(cls, path: Path) -> Identity:
        """Read a key file written by :meth:`save`.

        Raises :class:`IdentityError` when the file is missing, corrupt, or its
        mode lets group/others read it.
        """
        path = Path(path)
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="ascii")
        except FileNotFoundError as exc:
            raise IdentityError(f"{path}: identity file does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise IdentityError(f"{path}: cannot read identity file: {exc}") from exc
        problem = owner_only_problem(path, mode, "identity file")
        if problem is not None:
            raise IdentityError(problem)
        parts = text.split()
        if len(parts) != 2 or parts[0] != _FILE_TAG:
            raise IdentityError(
                f"{path}: not a fedswarm identity file (expected '{_FILE_TAG} <hex>')"
            )
        try:
            seed = bytes.fromhex(parts[1])
        except ValueError as exc:
            raise IdentityError(f"{path}: identity seed is not valid hex") from exc
        if len(seed) != 32:
            raise IdentityError(f"{path}: identity seed must be 32 bytes, got {len(seed)}")
        return cls(seed)

    def save(self, path: Path) -> None:
        """Write the key atomically (temp file + rename), mode 0600 from creation."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(f"{_FILE_TAG} {self.seed.hex()}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def sign(self, data: bytes) -> bytes:
        """64-byte Ed25519 signature of ``data``."""
        return bytes(self._signing_key.sign(data).signature)

    def __repr__(self) -> str:
        return f"Identity(peer_id={self.peer_id!r})"


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p base58 peer id ("12D3KooW...") of a raw Ed25519 public key."""
    if len(public_key) != 32:
        raise IdentityError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
    multihash = _IDENTITY_MULTIHASH_PREFIX + _ED25519_PROTO_PREFIX + public_key
    # base58 directly, not libp2p's ID: importing libp2p costs seconds, and reading a
    # config (fedswarm config check) needs peer ids but no network
    return str(base58.b58encode(multihash).decode())


def public_key_from_peer_id(peer_id: str) -> bytes:
    """Extract the raw Ed25519 public key embedded in an Ed25519 peer id.

    Ed25519 peer ids use the identity multihash, so the key is inside the id;
    that lets a roster of peer ids double as a list of verification keys.
    """
    try:
        raw = base58.b58decode(peer_id)
    except (ValueError, UnicodeEncodeError, TypeError) as exc:
        raise IdentityError(f"peer id {peer_id!r} is not base58") from exc
    prefix = _IDENTITY_MULTIHASH_PREFIX + _ED25519_PROTO_PREFIX
    if len(raw) != len(prefix) + 32 or not raw.startswith(prefix):
        raise IdentityError(f"peer id {peer_id!r} is not an Ed25519 libp2p peer id")
    return raw[len(prefix) :]


def verify_signature(peer_id: str, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``peer_id``'s Ed25519 signature of ``data``."""
    try:
        key = nacl.signing.VerifyKey(public_key_from_peer_id(peer_id))
        key.verify(data, signature)
    except (
        IdentityError,
        nacl.exceptions.BadSignatureError,
        nacl.exceptions.ValueError,
        nacl.exceptions.TypeError,
    ):
        return False
    return True
