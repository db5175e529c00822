"""The JSON API returns what the daemon view says, as strict JSON, and survives bad input."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from fedswarm.daemon.state import StateStore
from fedswarm.daemon.views.status import DaemonStatusView
from fedswarm.webui.app import create_app
from fedswarm.webui.config import DashboardConfig
from fedswarm.webui.errors import DashboardConfigError

STATUS_KEYS = {
    "org",
    "federation_id",
    "peer_id",
    "round",
    "state",
    "uptime_s",
    "version",
    "device",
    "secure_aggregation",
    "mode",
    "rounds_target",
    "rounds_completed",
    "peers_up",
    "eval_loss_start",
    "eval_loss_last",
    "adapter_fingerprint",
    "listen_addrs",
}


async def get_json(client: TestClient[Any, Any], path: str, auth: dict[str, str]) -> Any:
    response = await client.get(path, headers=auth)
    assert response.status == 200, path
    assert response.content_type == "application/json"
    return json.loads(await response.text())  # strict parse of the raw text


async def test_status_has_overview_fields(
    client: TestClient[Any, Any], auth: dict[str, str]
) -> None:
    status = await get_json(client, "/api/status", auth)
    assert status.keys() >= STATUS_KEYS
    assert status["round"] == 3


async def test_peers_is_a_list_of_roster_members(
    client: TestClient[Any, Any], auth: dict[str, str], hostile_org: str
) -> None:
    peers = await get_json(client, "/api/peers", auth)
    assert [p["org"] for p in peers] == ["org-1-news", hostile_org, "org-3-code"]
    assert {"peer_id", "addrs", "last_seen", "latency_ms", "up", "is_self"} <= peers[0].keys()


async def test_rounds_lists_the_round_log(
    client: TestClient[Any, Any], auth: dict[str, str]
) -> None:
    rounds = await get_json(client, "/api/rounds", auth)
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[0]["aggregator"] != rounds[0]["decryptor"]


async def test_rounds_limit_is_passed_to_the_view(
    client: TestClient[Any, Any], auth: dict[str, str]
) -> None:
    rounds = await get_json(client, "/api/rounds?limit=1", auth)
    assert [r["round"] for r in rounds] == [2]


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "1e9x", ""])
async def test_bad_rounds_limit_gets_400(
    client: TestClient[Any, Any], auth: dict[str, str], bad: str
) -> None:
    response = await client.get("/api/rounds", params={"limit": bad}, headers=auth)
    assert response.status == 400
    assert "limit" in (await response.json())["error"]


async def test_rounds_limit_is_capped_by_config(
    make_client: Any, fake_view: Any, auth: dict[str, str]
) -> None:
    fake_view.round_log = [dict(fake_view.round_log[0], round=i) for i in range(1, 11)]
    client = await make_client(DashboardConfig(rounds_limit=4))
    rounds = await get_json(client, "/api/rounds?limit=999", auth)
    assert [r["round"] for r in rounds] == [7, 8, 9, 10]


async def test_training_has_steps_rounds_and_samples(
    client: TestClient[Any, Any], auth: dict[str, str]
) -> None:
    training = await get_json(client, "/api/training", auth)
    assert len(training["steps"]) == 6
    assert [r["round"] for r in training["rounds"]] == [1, 2]
    assert training["samples"][0]["output"] == "<script>alert(2)</script>"


async def test_samples_stored_by_the_daemon_reach_the_training_payload(
    tmp_path: Path, token: str, auth: dict[str, str]
) -> None:
    """The real path: ``StateStore.add_samples`` → ``DaemonStatusView`` → /api/training."""
    store = StateStore.open(tmp_path)
    store.begin_round(1)
    store.update_round(1, status="complete", train_loss=2.5)
    store.add_samples(1, [("The pilot", " checked the flaps"), ("At the", " harbour")])
    store.add_samples(2, [("The pilot", " landed")])
    daemon = SimpleNamespace(config=SimpleNamespace(federation=SimpleNamespace(mode="lora_avg")),
                             store=store, eval_loss_start=3.0)
    view = DaemonStatusView(daemon)  # type: ignore[arg-type]
    client: TestClient[Any, Any] = TestClient(
        TestServer(create_app(view, token), host="127.0.0.1"))
    await client.start_server()
    try:
        training = await get_json(client, "/api/training", auth)
    finally:
        await client.close()
        store.close()
    assert training["samples"] == [  # newest first
        {"round": 2, "prompt": "The pilot", "output": " landed"},
        {"round": 1, "prompt": "At the", "output": " harbour"},
        {"round": 1, "prompt": "The pilot", "output": " checked the flaps"},
    ]
    assert [r["round"] for r in training["rounds"]] == [1]


async def test_security_reports_parameters_and_rejections(
    client: TestClient[Any, Any], auth: dict[str, str]
) -> None:
    security = await get_json(client, "/api/security", auth)
    assert security["secure_aggregation"]["security_bits"] == 128
    assert security["rejected_counts"] == {"blob": 1}
    assert security["rejected"][0]["reason"] == "not on roster"


async def test_nan_in_view_data_becomes_null_not_invalid_json(
    client: TestClient[Any, Any], auth: dict[str, str]
) -> None:
    traffic = await get_json(client, "/api/traffic", auth)
    assert traffic["odd"] is None
    assert traffic["bytes_sent"] == 3000


async def test_metrics_is_prometheus_text(
    client: TestClient[Any, Any], auth: dict[str, str]
) -> None:
    response = await client.get("/metrics", headers=auth)
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert "fedswarm_round 3" in await response.text()


async def test_failing_view_gets_503_and_server_keeps_serving(
    client: TestClient[Any, Any], auth: dict[str, str], fake_view: Any
) -> None:
    fake_view.fail = True
    response = await client.get("/api/status", headers=auth)
    assert response.status == 503
    assert "view broke" not in await response.text()  # internals stay in the log
    fake_view.fail = False
    assert (await client.get("/api/status", headers=auth)).status == 200


async def test_json_is_not_served_as_html(
    client: TestClient[Any, Any], auth: dict[str, str], hostile_org: str
) -> None:
    response = await client.get("/api/peers", headers=auth)
    assert response.content_type == "application/json"
    assert hostile_org in {p["org"] for p in await response.json()}


@pytest.mark.parametrize(
    "kwargs",
    [{"keepalive_s": 0}, {"client_buffer_events": 0}, {"cookie_name": "a b"}, {"rounds_limit": 0}],
)
def test_out_of_range_config_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(DashboardConfigError):
        DashboardConfig(**kwargs)


async def test_fedkseed_lists_bytes_losses_and_seeds_per_round(
    client: TestClient[Any, Any], auth: dict[str, str], fake_view: Any
) -> None:
    fake_view.kseed["enabled"] = True
    panel = await get_json(client, "/api/fedkseed", auth)
    assert panel["enabled"] is True and panel["k"] == 1024
    assert [(r["round"], r["bytes_sent"], r["seeds_used"]) for r in panel["rounds"]] == [
        (1, 16416, 88), (2, None, None)]
    assert (await client.get("/api/fedkseed")).status == 401  # the token is required


async def test_offsite_shows_role_package_and_rounds_behind_the_token(
    client: TestClient[Any, Any], auth: dict[str, str], fake_view: Any
) -> None:
    fake_view.off["enabled"] = True
    panel = await get_json(client, "/api/offsite", auth)
    assert (panel["enabled"], panel["role"], panel["owner_org"]) == (True, "member", "org-0-bank")
    assert panel["package"]["layers_in_package"] == 6 and panel["fetch"]["state"] == "verified"
    assert [(r["round"], r["eval_loss_after"], r["bytes_sent"]) for r in panel["rounds"]] == [
        (1, 0.81, 5000)]
    assert (await client.get("/api/offsite")).status == 401  # the token is required


async def test_fedmkt_lists_teacher_student_edges_with_org_names(
    client: TestClient[Any, Any], auth: dict[str, str], fake_view: Any, hostile_org: str
) -> None:
    fake_view.mkt["enabled"] = True
    fedmkt = await get_json(client, "/api/fedmkt", auth)
    assert fedmkt["enabled"] is True
    (round_1,) = fedmkt["rounds"]
    assert [(e["teacher_org"], e["student_org"]) for e in round_1["edges"]] == [
        (hostile_org, "org-1-news"),
        ("org-3-code", "org-1-news"),
    ]
    assert round_1["aligned_fraction"] == 0.62
    assert [entry["loss"] for entry in round_1["public_losses"]] == [3.25, 2.5, None]


async def test_fedmkt_view_failure_gets_503(
    client: TestClient[Any, Any], auth: dict[str, str], fake_view: Any
) -> None:
    def broken() -> dict[str, Any]:
        raise KeyError("missing")  # a view bug: the handler must answer, not crash

    fake_view.mkt = None
    fake_view.fedmkt = broken
    response = await client.get("/api/fedmkt", headers=auth)
    assert response.status == 503


async def test_recent_events_give_a_page_opened_late_its_history(
    client: TestClient[Any, Any], auth: dict[str, str]
) -> None:
    events = await get_json(client, "/api/events/recent", auth)
    assert [e["type"] for e in events] == ["round_started", "state"]
    assert events[0]["ts"] < events[1]["ts"]



async def test_evaluation_lists_each_rounds_scores_per_set(
    client: TestClient[Any, Any], auth: dict[str, str], fake_view: Any
) -> None:
    panel = await get_json(client, "/api/evaluation", auth)
    assert (panel["enabled"], panel["every_rounds"], panel["max_rows"]) == (True, 1, 32)
    assert [(r["round"], r["name"], r["kind"], r["exact_match"], r["refusal_rate"])
            for r in panel["results"]] == [
        (1, "qa", "set", 0.1, None), (2, "qa", "set", 0.25, None),
        (2, "<b>should-refuse</b>", "refusal", None, 0.75)]
    assert (await client.get("/api/evaluation")).status == 401  # the token is required
