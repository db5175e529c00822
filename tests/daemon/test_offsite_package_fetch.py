"""A member's start in ``mode = "offsite"``: the package is fetched before the first
round, a tampered answer is refused (the owner is recorded as rejected) and fetched
again, and a stop request ends the wait without an error."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
from fedswarm.daemon import offsite_start
from fedswarm.daemon.config import load_config
from fedswarm.daemon.errors import ConfigError
from fedswarm.daemon.offsite_start import OffsiteStart
from fedswarm.daemon.round_runner import TrainingInterrupted
from fedswarm.daemon.setup_files import init_node
from fedswarm.federation.link import PACKAGE_KIND, PACKAGE_REQUEST_KIND, FunctionLink
from fedswarm.federation.offsite.distribution import PackageServer
from fedswarm.federation.offsite.transport import PackageService
from fedswarm.learning.offsite.manifest import write_manifest
from fedswarm.p2p.identity import Identity
from fedswarm.p2p.roster import Member, Roster

pytestmark = pytest.mark.timeout(120)

OWNER = Identity.generate().peer_id


def _package(tmp_path: Path) -> tuple[Path, str]:
    package = tmp_path / "owner-package"
    package.mkdir()
    (package / "model.safetensors").write_bytes(bytes(range(1, 256)) * 100)
    layout = {"total": 8, "bottom": 2, "top": 2, "keep": 2}
    (package / "offsite.json").write_text(json.dumps({"format": 1, "layout": layout}))
    return package, write_manifest(package)


def _member(tmp_path: Path, package_id: str) -> tuple[OffsiteStart, list[str]]:
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "hello world"}\n' * 4)
    node = init_node(tmp_path / "node", "bank-b", model_path=str(tmp_path / "none"),
                     train_path=str(train), api_port=0)
    text = node.config_path.read_text().replace('mode = "lora_avg"', 'mode = "offsite"')
    node.config_path.write_text(text + f'\n[offsite]\npackage_id = "{package_id}"\n')
    roster = Roster("fed", (Member("bank-a", OWNER, role="model_owner"),
                            Member("bank-b", node.peer_id)))
    rejected: list[str] = []
    start = OffsiteStart(load_config(node.config_path), roster, node.peer_id,
                         FunctionLink(lambda *a: asyncio.sleep(0)),
                         lambda peer, kind, why: rejected.append(f"{peer} {kind} {why}"))
    return start, rejected


def _serve(start: OffsiteStart, package: Path, corrupt_answers: int) -> None:
    """Wire the member's requests to the owner's server; the first answers are altered."""
    left = [corrupt_answers]
    assert start.client is not None

    async def to_member(peer: str, kind: str, round: int, payload: bytes) -> None:
        assert kind == PACKAGE_KIND
        if left[0] > 0 and len(payload) > 10_000:  # the weights, not the manifest
            left[0] -= 1
            payload = payload[:-1] + bytes([payload[-1] ^ 0xFF])
        assert start.client is not None
        assert start.on_blob(OWNER, False, payload) is None

    service = PackageService(FunctionLink(to_member), PackageServer(package))

    async def to_owner(peer: str, kind: str, round: int, payload: bytes) -> None:
        assert (peer, kind) == (OWNER, PACKAGE_REQUEST_KIND)
        assert service.on_request("bank-b", payload) is None

    start.client._link = FunctionLink(to_owner)


def test_a_tampered_answer_is_refused_then_the_package_is_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offsite_start, "FETCH_RETRY_S", 0.01)
    package, package_id = _package(tmp_path)
    start, rejected = _member(tmp_path, package_id)
    assert not start.is_owner and start.role.owner == OWNER
    _serve(start, package, corrupt_answers=1)
    assert (start.fetch_state, start.package_bytes) == ("waiting", None)

    fetched = asyncio.run(start.fetch(asyncio.Event()))
    listed = (package / "model.safetensors").stat().st_size + (package / "offsite.json").stat(
    ).st_size
    assert (start.fetch_state, start.fetched_bytes, start.package_bytes) == (
        "verified", listed, listed)
    assert fetched.package_id == package_id
    assert fetched.path == start.config.offsite_package_dir
    assert (fetched.path / "model.safetensors").read_bytes() == (
        package / "model.safetensors").read_bytes()
    assert len(rejected) == 1 and rejected[0].startswith(f"{OWNER} {PACKAGE_KIND} ")
    assert "do not match the manifest" in rejected[0]


def test_an_owner_that_never_answers_is_waited_for_until_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offsite_start, "FETCH_RETRY_S", 0.01)
    _, package_id = _package(tmp_path)
    start, rejected = _member(tmp_path, package_id)
    assert start.client is not None
    tries = []

    async def unreachable(peer: str, kind: str, round: int, payload: bytes) -> None:
        tries.append(kind)
        if len(tries) == 3:
            stop.set()
        raise ConnectionError("no route to the owner")

    start.client._link = FunctionLink(unreachable)
    stop = asyncio.Event()
    with pytest.raises(TrainingInterrupted):
        asyncio.run(start.fetch(stop))
    assert len(tries) == 3 and rejected == []
    assert start.fetch_state == "waiting"  # what the Offsite panel shows meanwhile


def test_answers_and_requests_to_the_wrong_role_are_reasons(tmp_path: Path) -> None:
    _, package_id = _package(tmp_path)
    start, _ = _member(tmp_path, package_id)
    assert start.on_blob(OWNER, True, b"{}") == (
        "package request to a member that is not the model owner")
    assert start.on_blob("someone", False, b"x") == (
        "package answer from a peer that is not the model owner")
    assert dataclasses.asdict(start.role)["is_owner"] is False


def test_a_verified_but_unusable_package_is_a_config_error_not_an_endless_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(offsite_start, "FETCH_RETRY_S", 0.01)
    package, _ = _package(tmp_path)
    (package / "offsite.json").write_text('{"format": 99}')
    package_id = write_manifest(package)  # the owner published it so: hashes match
    start, _ = _member(tmp_path, package_id)
    _serve(start, package, corrupt_answers=0)
    with pytest.raises(ConfigError, match=r"\[offsite\] package_id: .* not usable") as error:
        asyncio.run(start.fetch(asyncio.Event()))
    assert "\n" not in str(error.value)


def test_a_member_waiting_for_its_package_already_answers_on_its_api(tmp_path: Path) -> None:
    """The API is up before the package is: the Offsite panel says the member waits."""
    import tomllib
    import urllib.request

    import tomli_w
    from fedswarm.daemon.service import Daemon
    from fedswarm.p2p.identity import Identity as Id

    _, package_id = _package(tmp_path)
    _member(tmp_path, package_id)  # writes the member's node folder
    config_path = tmp_path / "node" / "config.toml"
    document = tomllib.loads(config_path.read_text())
    document["federation"]["secure_aggregation"] = "none"
    document["node"]["listen"] = "/ip4/127.0.0.1/tcp/0"
    config_path.write_text(tomli_w.dumps(document))
    config = load_config(config_path)
    identity = Id.load(config.identity_path)
    roster = Roster("fed", (Member("bank-a", OWNER, role="model_owner"),
                            Member("bank-b", identity.peer_id)))
    token = (tmp_path / "node" / "api.token").read_text().strip()
    daemon = Daemon(config, identity, roster, token)

    def get(route: str) -> dict[str, object]:
        request = urllib.request.Request(daemon.api_url + route,
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    async def scenario() -> dict[str, object]:
        running = asyncio.create_task(daemon.run())
        for _ in range(300):
            if daemon.api_url:
                break
            await asyncio.sleep(0.05)
        panel = await asyncio.to_thread(get, "/api/offsite")
        # the rest of the API answers too, before the runner and membership exist
        status = await asyncio.to_thread(get, "/api/status")
        daemon.request_stop()
        await asyncio.wait_for(running, 30)
        return {**panel, "status_state": status.get("state")}

    panel = asyncio.run(scenario())
    assert panel.pop("status_state") is not None
    assert (panel["enabled"], panel["role"], panel["package"]) == (True, "member", None)
    assert panel["fetch"] == {"state": "waiting", "bytes_fetched": 0, "bytes_total": None}
