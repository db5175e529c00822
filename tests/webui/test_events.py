"""Server-sent events: delivery, keep-alives, drop-oldest for slow clients, cleanup."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from fedswarm.webui.app import STREAMS_KEY
from fedswarm.webui.config import DashboardConfig
from fedswarm.webui.events import ClientEventBuffer, encode_event, publish_drop_oldest

READ_TIMEOUT_S = 5.0


async def read_message(response: ClientResponse) -> list[str]:
    """The lines of the next SSE message (up to its blank line)."""
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(response.content.readline(), READ_TIMEOUT_S)
        if raw == b"":
            raise EOFError("stream ended")
        line = raw.decode().rstrip("\n")
        if line == "":
            if lines:
                return lines
            continue
        lines.append(line)


async def read_data(response: ClientResponse) -> dict[str, Any]:
    """The next ``data:`` payload, skipping comments such as keep-alives."""
    while True:
        lines = await read_message(response)
        data = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
        if data:
            return dict(json.loads(data[0]))


async def open_stream(client: TestClient[Any, Any], auth: dict[str, str]) -> ClientResponse:
    response = await client.get("/api/events", headers=auth)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert (await read_message(response))[0] == ": connected"  # subscribed by now
    return response


async def wait_until(predicate: Any, what: str) -> None:
    for _ in range(200):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


async def test_event_pushed_after_connect_is_delivered(
    client: TestClient[Any, Any], auth: dict[str, str], fake_view: Any
) -> None:
    response = await open_stream(client, auth)
    fake_view.push({"type": "round_started", "round": 4, "org": "<b>x</b>"})
    event = await read_data(response)
    assert event == {"type": "round_started", "round": 4, "org": "<b>x</b>"}
    response.close()


async def test_events_carry_increasing_ids(
    client: TestClient[Any, Any], auth: dict[str, str], fake_view: Any
) -> None:
    response = await open_stream(client, auth)
    fake_view.push({"type": "a"})
    first = await read_message(response)
    fake_view.push({"type": "b"})
    second = await read_message(response)
    assert first[0] == "id: 1" and second[0] == "id: 2"
    response.close()


async def test_idle_stream_gets_keepalive_comments(make_client: Any, auth: dict[str, str]) -> None:
    client = await make_client(DashboardConfig(keepalive_s=0.05))
    response = await open_stream(client, auth)
    assert await read_message(response) == [": keep-alive"]
    response.close()


async def test_slow_client_loses_oldest_events_and_is_told_to_resync(
    make_client: Any, auth: dict[str, str], fake_view: Any
) -> None:
    client = await make_client(DashboardConfig(client_buffer_events=2))
    response = await open_stream(client, auth)
    for n in range(1, 6):
        fake_view.push({"type": "tick", "n": n})
    assert await read_data(response) == {"type": "resync", "dropped": 3}
    assert (await read_data(response))["n"] == 4
    assert (await read_data(response))["n"] == 5
    response.close()


async def test_disconnect_unsubscribes(
    make_client: Any, auth: dict[str, str], fake_view: Any
) -> None:
    client = await make_client(DashboardConfig(keepalive_s=0.05))
    response = await open_stream(client, auth)
    assert len(fake_view.queues) == 1
    response.close()
    await wait_until(lambda: not fake_view.queues, "the view's queue was unsubscribed")


async def test_server_shutdown_ends_open_streams(
    client: TestClient[Any, Any], auth: dict[str, str], fake_view: Any
) -> None:
    response = await open_stream(client, auth)
    app = client.app
    assert app is not None
    app[STREAMS_KEY].close_all()
    assert await asyncio.wait_for(response.content.read(), READ_TIMEOUT_S) == b""
    await wait_until(lambda: not fake_view.queues, "the view's queue was unsubscribed")


async def test_non_dict_events_are_skipped(
    client: TestClient[Any, Any], auth: dict[str, str], fake_view: Any
) -> None:
    response = await open_stream(client, auth)
    for queue in fake_view.queues:
        queue.put_nowait("not an event")
    fake_view.push({"type": "ok"})
    assert await read_data(response) == {"type": "ok"}
    response.close()


async def test_buffer_drops_oldest_when_full() -> None:
    buffer = ClientEventBuffer(capacity=3)
    for n in range(5):
        buffer.push({"n": n})
    events, dropped = await buffer.take(timeout_s=0.01)
    assert [e["n"] for e in events] == [2, 3, 4]
    assert dropped == 2
    assert await buffer.take(timeout_s=0.01) == ([], 0)


async def test_publish_drop_oldest_never_blocks_a_full_queue() -> None:
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=2)
    for n in range(4):
        publish_drop_oldest(queue, {"n": n})
    assert [queue.get_nowait()["n"] for _ in range(2)] == [2, 3]


def test_encoded_event_is_one_data_line_even_with_newlines_and_nan() -> None:
    raw = encode_event(
        9, {"type": "sample", "text": "line1\nline2\n\ndata: fake", "x": float("nan")}
    )
    lines = raw.decode().split("\n")
    assert lines[0] == "id: 9"
    assert lines[1].startswith("data: ")
    assert lines[2:] == ["", ""]
    assert json.loads(lines[1][len("data: ") :])["x"] is None
