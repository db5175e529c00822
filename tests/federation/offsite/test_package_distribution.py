"""Members fetch the owner's package: resumable, hash-checked, and nothing else is served."""

from __future__ import annotations

from pathlib import Path

import pytest
from fedswarm.federation.offsite import distribution
from fedswarm.federation.offsite.distribution import (
    NotInPackageError,
    PackageServer,
    encode_request,
    fetch_package,
)
from fedswarm.learning.offsite.manifest import verify_package_files, write_manifest
from fedswarm.learning.offsite.package import LAYOUT_FILE


@pytest.fixture
def owner_side(tmp_path: Path) -> tuple[Path, Path, str]:
    """An owner's folder: the full model next to a published package (contents faked)."""
    full = tmp_path / "owner" / "full-model"
    full.mkdir(parents=True)
    (full / "model.safetensors").write_bytes(b"FULL WEIGHTS " * 1000)
    package = tmp_path / "owner" / "package"
    (package / "sub").mkdir(parents=True)
    (package / "model.safetensors").write_bytes(bytes(range(256)) * 300)
    (package / "sub" / "tokenizer.json").write_text("{}")
    (package / LAYOUT_FILE).write_text('{"format": 1}')
    return full, package, write_manifest(package)


@pytest.mark.parametrize(
    "name",
    [
        "../full-model/model.safetensors",
        "full-model/model.safetensors",
        "/etc/passwd",
        "model.safetensors.part",
        "",
    ],
)
def test_a_member_cannot_request_the_full_weights_or_any_other_file(
    owner_side: tuple[Path, Path, str], name: str
) -> None:
    _, package, _ = owner_side
    server = PackageServer(package)
    with pytest.raises(NotInPackageError, match="not part of the published package"):
        server.answer(encode_request(name, 0, 100))


async def test_a_dropped_transfer_resumes_where_it_stopped(
    owner_side: tuple[Path, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, package, package_id = owner_side
    monkeypatch.setattr(distribution, "CHUNK_BYTES", 10_000)
    server = PackageServer(package)
    served: list[int] = []

    async def flaky(request: bytes) -> bytes:
        if len(served) == 4:
            served.append(-1)
            raise ConnectionError("stream reset")
        answer = server.answer(request)
        served.append(len(answer))
        return answer

    dest = tmp_path / "member" / "package"
    with pytest.raises(ConnectionError):
        await fetch_package(flaky, dest, package_id)
    partial = sum(p.stat().st_size for p in dest.rglob("*.part"))
    assert partial > 0  # kept, not thrown away
    heard: list[tuple[int, int]] = []
    await fetch_package(flaky, dest, package_id, progress=lambda *p: heard.append(p))
    assert verify_package_files(dest, package_id) == package_id
    total = sum(p.stat().st_size for p in package.rglob("*") if p.is_file())
    listed = total - (package / "offsite_manifest.json").stat().st_size
    # the dashboard's "n of m bytes": resumes from what was kept, grows, ends whole
    assert heard[0][0] >= partial and heard[-1] == (listed, listed)
    assert [h for h, _ in heard] == sorted(h for h, _ in heard)
    # Every byte crossed the wire once (plus the 8-byte offset of each answer).
    assert sum(n for n in served if n > 0) - 8 * sum(1 for n in served if n > 0) == total


async def test_a_package_the_owner_tampered_with_in_transit_is_refused(
    owner_side: tuple[Path, Path, str], tmp_path: Path
) -> None:
    from fedswarm.learning.errors import TamperedPackageError

    _, package, package_id = owner_side
    server = PackageServer(package)

    async def tampering(request: bytes) -> bytes:
        answer = bytearray(server.answer(request))
        if b"model.safetensors" in request:
            answer[-1] ^= 0xFF
        return bytes(answer)

    dest = tmp_path / "member" / "package"
    with pytest.raises(TamperedPackageError, match="do not match the manifest"):
        await fetch_package(tampering, dest, package_id)
    assert not (dest / "model.safetensors").exists()
    with pytest.raises(TamperedPackageError, match="published package id"):
        await fetch_package(tampering, tmp_path / "other", "0" * 64)


async def test_a_short_answer_is_refused_not_a_crash(
    owner_side: tuple[Path, Path, str], tmp_path: Path
) -> None:
    from fedswarm.learning.errors import TamperedPackageError

    _, package, package_id = owner_side
    server = PackageServer(package)

    async def short(request: bytes) -> bytes:
        return server.answer(request) if b"offsite_manifest" in request else b"\x00"

    with pytest.raises(TamperedPackageError, match="answer is 1 bytes"):
        await fetch_package(short, tmp_path / "member", package_id)
