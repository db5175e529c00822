"""Getting the package from the owner to a member: by file name, in chunks, hash-checked.

The owner answers requests for ``(file, offset, length)`` and nothing else: only the
manifest and the files it lists are ever served, so no request, however phrased,
reaches the full model (which is not in the package directory, and whose path the
server never looks at). The member fetches the manifest first and checks it against
the published package id, then fetches each file into ``NAME.part``; after a dropped
connection it resumes from the bytes it has. A file is kept only when its sha256
matches the manifest, and the package is opened only after every hash is checked.

The transport is a function from request bytes to answer bytes: the daemon's link, or
a direct call in tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from fedswarm.learning.errors import TamperedPackageError
from fedswarm.learning.offsite.manifest import MANIFEST_FILE, file_sha256, read_manifest

CHUNK_BYTES = 4 << 20
"""Largest answer: well inside a blob, and what a drop costs at most."""
_ANSWER = struct.Struct("!Q")  # offset of the data that follows

Request = Callable[[bytes], Awaitable[bytes]]
Progress = Callable[[int, int], None]
"""Told ``(bytes held, bytes in the package)`` as a fetch goes (the dashboard's line)."""


class NotInPackageError(Exception):
    """A request for something the owner does not publish (the full model, any other file)."""


class BadPackageRequestError(ValueError):
    """A request that is not well-formed JSON with a name, an offset and a length."""


def encode_request(name: str, offset: int, length: int) -> bytes:
    return json.dumps({"name": name, "offset": offset, "length": length}).encode()


class PackageServer:
    """The owner's answers: slices of the published files, and refusals for anything else."""

    def __init__(self, package_dir: Path) -> None:
        self.package_dir = Path(package_dir)
        _, entries = read_manifest(self.package_dir)
        self._sizes = {e.name: e.size for e in entries}
        self._sizes[MANIFEST_FILE] = (self.package_dir / MANIFEST_FILE).stat().st_size

    def answer(self, request: bytes) -> bytes:
        try:
            data = json.loads(request)
            name, offset, length = str(data["name"]), int(data["offset"]), int(data["length"])
        except (ValueError, KeyError, TypeError) as exc:
            raise BadPackageRequestError(f"malformed package request ({exc})") from None
        if name not in self._sizes:
            raise NotInPackageError(
                f"{name!r} is not part of the published package; only "
                "the emulator and adapter files are served"
            )
        if offset < 0 or length < 1 or length > CHUNK_BYTES or offset > self._sizes[name]:
            raise BadPackageRequestError(f"{name}: bad range offset={offset} length={length}")
        with (self.package_dir / name).open("rb") as f:
            f.seek(offset)
            return _ANSWER.pack(offset) + f.read(length)


async def _fetch_file(
    request: Request, name: str, size: int, part: Path, on_chunk: Callable[[int], None]
) -> None:
    """Append ``name``'s missing bytes to ``part`` (resuming from what is there);
    ``on_chunk`` is told how many of its bytes are held, first and after each chunk."""
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    on_chunk(have)
    with part.open("ab") as f:
        while have < size:
            answer = await request(encode_request(name, have, min(CHUNK_BYTES, size - have)))
            if len(answer) < _ANSWER.size:
                raise TamperedPackageError(f"{name}: the owner's answer is {len(answer)} bytes")
            (offset,) = _ANSWER.unpack_from(answer)
            chunk = answer[_ANSWER.size :]
            if offset != have or not chunk or len(chunk) > size - have:
                raise TamperedPackageError(
                    f"{name}: the owner answered bytes {offset}+{len(chunk)}, expected from {have}"
                )
            f.write(chunk)
            f.flush()
            have += len(chunk)
            on_chunk(have)
        os.fsync(f.fileno())


async def fetch_package(
    request: Request,
    dest: Path,
    package_id: str,
    manifest_size: int = 0,
    progress: Progress | None = None,
) -> Path:
    """Fetch (or finish fetching) the package ``package_id`` into ``dest``; returns ``dest``.

    ``manifest_size`` 0 asks for the manifest in one chunk. Raises ``TamperedPackageError``
    when the manifest or a file does not hash as published (a bad file is deleted, so the
    next attempt fetches it again) and lets transport errors through: calling again resumes.
    ``progress`` hears the bytes held of the files the manifest lists, once the manifest is
    here and after every chunk.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    manifest = dest / MANIFEST_FILE
    if not manifest.exists() or hashlib.sha256(manifest.read_bytes()).hexdigest() != package_id:
        answer = await request(encode_request(MANIFEST_FILE, 0, manifest_size or CHUNK_BYTES))
        body = answer[_ANSWER.size :]
        if hashlib.sha256(body).hexdigest() != package_id:
            raise TamperedPackageError(
                "the manifest the owner sent does not hash to the "
                f"published package id {package_id[:16]}…"
            )
        manifest.write_bytes(body)
    _, entries = read_manifest(dest, package_id)
    total = sum(e.size for e in entries)
    done = 0  # bytes of the files already whole and checked
    for entry in entries:
        final = dest / entry.name
        if (
            final.exists()
            and final.stat().st_size == entry.size
            and file_sha256(final) == entry.sha256
        ):
            done += entry.size
            continue
        part = final.with_name(final.name + ".part")

        def on_chunk(have: int, before: int = done) -> None:
            if progress is not None:
                progress(before + have, total)

        await _fetch_file(request, entry.name, entry.size, part, on_chunk)
        if file_sha256(part) != entry.sha256:
            part.unlink()
            raise TamperedPackageError(f"{entry.name}: fetched bytes do not match the manifest")
        os.replace(part, final)
        done += entry.size
    if progress is not None:
        progress(done, total)
    return dest
