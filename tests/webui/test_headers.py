"""Security headers are on every response, and no CORS header ever is."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

PATHS = ["/", "/api/status", "/metrics", "/static/dashboard.js", "/nope"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("authorised", [True, False])
async def test_csp_and_frame_headers_on_every_response(
    client: TestClient[Any, Any], auth: dict[str, str], path: str, authorised: bool
) -> None:
    headers = dict(auth) if authorised else {}
    headers["Origin"] = "https://evil.example"
    response = await client.get(path, headers=headers)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert not any(name.lower().startswith("access-control-") for name in response.headers)


async def test_cors_preflight_is_not_answered_with_permission(
    client: TestClient[Any, Any]
) -> None:
    response = await client.options(
        "/api/status",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.status in (401, 405)
    assert "Access-Control-Allow-Origin" not in response.headers
