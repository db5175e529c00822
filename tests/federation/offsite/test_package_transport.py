"""The package over a link: a member's requests reach the owner's server as blobs, the
answers come back as blobs, and anything out of turn is a rejection reason, not a crash."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fedswarm.federation.link import PACKAGE_KIND, PACKAGE_REQUEST_KIND, FunctionLink
from fedswarm.federation.offsite.distribution import PackageServer, encode_request, fetch_package
from fedswarm.federation.offsite.transport import PackageClient, PackageService
from fedswarm.learning.errors import TamperedPackageError
from fedswarm.learning.offsite.manifest import verify_package_files, write_manifest

OWNER, MEMBER = "owner", "member"


def _package(tmp_path: Path) -> tuple[Path, str]:
    package = tmp_path / "owner" / "package"
    package.mkdir(parents=True)
    (package / "model.safetensors").write_bytes(bytes(range(256)) * 300)
    (package / "offsite.json").write_text('{"format": 1}')
    return package, write_manifest(package)


def _wire(server: PackageServer) -> tuple[PackageClient, list[str]]:
    rejected: list[str] = []
    client: PackageClient

    async def owner_receives(peer: str, kind: str, round: int, payload: bytes) -> None:
        assert (peer, kind) == (OWNER, PACKAGE_REQUEST_KIND)
        reason = service.on_request(MEMBER, payload)
        if reason is not None:
            rejected.append(reason)

    async def member_receives(peer: str, kind: str, round: int, payload: bytes) -> None:
        assert (peer, kind) == (MEMBER, PACKAGE_KIND)
        reason = client.on_answer(OWNER, payload)
        if reason is not None:
            rejected.append(reason)

    service = PackageService(FunctionLink(member_receives), server)
    client = PackageClient(FunctionLink(owner_receives), OWNER, timeout_s=5)
    return client, rejected


def test_a_member_fetches_the_package_over_the_link(tmp_path: Path) -> None:
    package, package_id = _package(tmp_path)
    client, rejected = _wire(PackageServer(package))
    dest = asyncio.run(fetch_package(client.request, tmp_path / "member", package_id))
    assert verify_package_files(dest, package_id) == package_id
    assert rejected == []


def test_answers_out_of_turn_or_from_another_peer_are_refused(tmp_path: Path) -> None:
    package, _ = _package(tmp_path)
    client, _ = _wire(PackageServer(package))
    assert client.on_answer("someone-else", b"x") == (
        "package answer from a peer that is not the model owner"
    )
    assert client.on_answer(OWNER, b"x") == "package answer without a request"


def test_a_request_outside_the_package_is_a_reason_not_an_exception(tmp_path: Path) -> None:
    package, _ = _package(tmp_path)
    service = PackageService(FunctionLink(lambda *a: asyncio.sleep(0)), PackageServer(package))
    reason = service.on_request(MEMBER, encode_request("../full-model/model.safetensors", 0, 9))
    assert reason is not None and "not part of the published package" in reason
    assert "malformed" in (service.on_request(MEMBER, b"not json") or "")


def test_a_tampered_package_is_refused_and_not_kept(tmp_path: Path) -> None:
    package, package_id = _package(tmp_path)
    client, _ = _wire(PackageServer(package))
    data = (package / "model.safetensors").read_bytes()
    (package / "model.safetensors").write_bytes(b"\xff" + data[1:])  # same size, other bytes
    dest = tmp_path / "member"
    with pytest.raises(TamperedPackageError, match="do not match the manifest"):
        asyncio.run(fetch_package(client.request, dest, package_id))
    assert not (dest / "model.safetensors").exists()
