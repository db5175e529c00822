"""Every route needs the token; a wrong or missing one gets a bare 401."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from fedswarm.webui.app import create_app
from fedswarm.webui.auth import UNAUTHORIZED_BODY, cookie_name, cookie_value
from fedswarm.webui.errors import WeakTokenError

ROUTES = [
    "/",
    "/api/status",
    "/api/peers",
    "/api/rounds",
    "/api/training",
    "/api/evaluation",
    "/api/security",
    "/api/traffic",
    "/api/fedmkt",
    "/api/fedkseed",
    "/api/offsite",
    "/api/events",
    "/api/events/recent",
    "/metrics",
    "/static/dashboard.js",
    "/static/vendor/chartjs-4.4.9/chart.umd.js",
    "/no/such/page",
]

WRONG = "wrong-token-0123456789abcdef"


async def assert_bare_401(client: TestClient[Any, Any], path: str, **kwargs: Any) -> None:
    response = await client.get(path, allow_redirects=False, **kwargs)
    assert response.status == 401, path
    assert await response.text() == UNAUTHORIZED_BODY
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize("path", ROUTES)
async def test_missing_token_gets_bare_401(client: TestClient[Any, Any], path: str) -> None:
    await assert_bare_401(client, path)


@pytest.mark.parametrize("path", ROUTES)
async def test_wrong_bearer_token_gets_bare_401(client: TestClient[Any, Any], path: str) -> None:
    await assert_bare_401(client, path, headers={"Authorization": f"Bearer {WRONG}"})


@pytest.mark.parametrize("path", ROUTES)
async def test_wrong_query_token_gets_bare_401(client: TestClient[Any, Any], path: str) -> None:
    await assert_bare_401(client, path, params={"token": WRONG})


@pytest.mark.parametrize("path", ROUTES)
async def test_wrong_cookie_gets_bare_401(
    client: TestClient[Any, Any], token: str, path: str
) -> None:
    await assert_bare_401(client, path, headers={"Cookie": f"{cookie_name(token)}={WRONG}"})


async def test_basic_auth_scheme_is_not_accepted(client: TestClient[Any, Any], token: str) -> None:
    await assert_bare_401(client, "/api/status", headers={"Authorization": f"Basic {token}"})


async def test_empty_bearer_is_rejected(client: TestClient[Any, Any]) -> None:
    await assert_bare_401(client, "/api/status", headers={"Authorization": "Bearer "})


async def test_token_prefix_is_rejected(client: TestClient[Any, Any], token: str) -> None:
    await assert_bare_401(client, "/api/status", headers={"Authorization": f"Bearer {token[:-1]}"})


async def test_bearer_token_opens_api(client: TestClient[Any, Any], auth: dict[str, str]) -> None:
    response = await client.get("/api/status", headers=auth)
    assert response.status == 200
    assert (await response.json())["org"] == "org-1-news"


async def test_query_token_on_page_sets_strict_httponly_cookie_and_strips_token(
    client: TestClient[Any, Any], token: str
) -> None:
    response = await client.get("/", params={"token": token, "x": "1"}, allow_redirects=False)
    assert response.status == 303
    assert response.headers["Location"] == "/?x=1"
    cookie = response.cookies[cookie_name(token)]
    assert cookie.value == cookie_value(token) != token
    assert cookie["httponly"]
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"


async def test_cookie_from_first_load_authorises_later_fetches(
    client: TestClient[Any, Any], token: str
) -> None:
    page = await client.get("/", params={"token": token})  # follows the redirect
    assert page.status == 200
    assert "<title>fedswarm dashboard</title>" in await page.text()
    api = await client.get("/api/peers")  # no header, no query: the cookie jar carries it
    assert api.status == 200
    assert len(await api.json()) == 3


async def test_query_token_on_api_answers_without_redirect(
    client: TestClient[Any, Any], token: str
) -> None:
    response = await client.get("/api/status", params={"token": token}, allow_redirects=False)
    assert response.status == 200
    assert "Set-Cookie" not in response.headers


def test_short_token_is_refused_at_build_time(fake_view: Any) -> None:
    with pytest.raises(WeakTokenError):
        create_app(fake_view, "short")


def test_weak_token_error_is_still_a_value_error(fake_view: Any) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        create_app(fake_view, "")


# -- the cookie: one name per daemon, a value derived from the token ---------------------

OTHER = "other-daemon-token-0123456789"


async def _cookie_set_by(fake_view: Any, token: str) -> Any:
    client: TestClient[Any, Any] = TestClient(
        TestServer(create_app(fake_view, token), host="127.0.0.1")
    )
    await client.start_server()
    try:
        response = await client.get("/", params={"token": token}, allow_redirects=False)
        assert response.status == 303
        (morsel,) = response.cookies.values()
        return morsel
    finally:
        await client.close()


async def test_two_daemons_set_different_cookie_names_stable_across_restarts(
    fake_view: Any, token: str
) -> None:
    first = await _cookie_set_by(fake_view, token)
    other = await _cookie_set_by(fake_view, OTHER)
    again = await _cookie_set_by(fake_view, token)  # a restart: same token file
    assert first.key != other.key
    assert first.key == again.key and first.value == again.value
    assert first.value != other.value


async def test_cookie_value_is_not_the_token(fake_view: Any, token: str) -> None:
    morsel = await _cookie_set_by(fake_view, token)
    assert token not in morsel.value and token not in morsel.key
    assert morsel.value == cookie_value(token)
    assert len(morsel.value) == 64 and int(morsel.value, 16) >= 0


@pytest.mark.parametrize("path", ["/", "/api/status", "/api/events", "/metrics"])
async def test_cookie_holding_the_raw_token_is_refused(
    client: TestClient[Any, Any], token: str, path: str
) -> None:
    await assert_bare_401(client, path, headers={"Cookie": f"{cookie_name(token)}={token}"})


async def test_the_old_shared_cookie_name_is_refused(
    client: TestClient[Any, Any], token: str
) -> None:
    await assert_bare_401(client, "/api/status", headers={"Cookie": f"fedswarm_token={token}"})
    await assert_bare_401(
        client, "/api/status", headers={"Cookie": f"fedswarm_token={cookie_value(token)}"}
    )


async def test_derived_cookie_is_accepted(client: TestClient[Any, Any], token: str) -> None:
    response = await client.get(
        "/api/status", headers={"Cookie": f"{cookie_name(token)}={cookie_value(token)}"}
    )
    assert response.status == 200
    assert (await response.json())["org"] == "org-1-news"


async def test_another_daemons_cookie_is_refused(client: TestClient[Any, Any], token: str) -> None:
    # The derived value opens only the daemon whose token it came from.
    await assert_bare_401(
        client, "/api/status", headers={"Cookie": f"{cookie_name(token)}={cookie_value(OTHER)}"}
    )


@pytest.mark.parametrize("where", ["bearer", "query"])
async def test_derived_value_is_not_a_token(
    client: TestClient[Any, Any], token: str, where: str
) -> None:
    # Scripts present the token itself; the cookie's value is good only as the cookie.
    if where == "bearer":
        kwargs: dict[str, Any] = {"headers": {"Authorization": f"Bearer {cookie_value(token)}"}}
    else:
        kwargs = {"params": {"token": cookie_value(token)}}
    await assert_bare_401(client, "/api/status", **kwargs)
