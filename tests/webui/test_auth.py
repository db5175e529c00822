"""Every route needs the token; a wrong or missing one gets a bare 401."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from fedswarm.webui.app import create_app
from fedswarm.webui.auth import UNAUTHORIZED_BODY
from fedswarm.webui.errors import WeakTokenError

ROUTES = [
    "/",
    "/api/status",
    "/api/peers",
    "/api/rounds",
    "/api/training",
    "/api/security",
    "/api/traffic",
    "/api/events",
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
async def test_wrong_cookie_gets_bare_401(client: TestClient[Any, Any], path: str) -> None:
    await assert_bare_401(client, path, headers={"Cookie": f"fedswarm_token={WRONG}"})


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
    cookie = response.cookies["fedswarm_token"]
    assert cookie.value == token
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
