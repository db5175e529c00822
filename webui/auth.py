"""Token authentication for every page and API call.

One shared secret (written by ``fedswarm init``) protects the dashboard. It may
arrive three ways, checked in this order, the first one present deciding:

1. ``Authorization: Bearer <token>`` — scripts and ``curl``.
2. ``?token=<token>`` — the link an operator opens first. For a page load we then
   set an HttpOnly, SameSite=Strict cookie and redirect to the same URL without the
   token, so the secret does not stay in the address bar, history or screenshots.
3. The cookie — the page's own ``fetch`` and ``EventSource`` calls.

Anything else gets a bare 401: no page content and no hint about which part was
wrong, so a probe learns nothing but "not authorised". Comparisons run in constant
time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from yarl import URL

from .config import MIN_TOKEN_LENGTH, DashboardConfig
from .errors import WeakTokenError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TOKEN_KEY: web.AppKey[str] = web.AppKey("token", str)
CONFIG_KEY: web.AppKey[DashboardConfig] = web.AppKey("dashboard_config", DashboardConfig)

UNAUTHORIZED_BODY: Final = "401 Unauthorized\n"


def check_token_strength(token: str) -> None:
    """Refuse tokens that are too short to resist guessing over loopback."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise WeakTokenError(f"the API token must be at least {MIN_TOKEN_LENGTH} characters")


def request_token(request: web.Request, cookie_name: str = "fedswarm_token") -> str:
    """The token this request presents, or ``""`` if it presents none."""
    header = request.headers.get("Authorization")
    if header is not None:
        if header.startswith("Bearer "):
            return header[len("Bearer ") :].strip()
        return ""
    if "token" in request.query:
        return request.query["token"]
    return request.cookies.get(cookie_name, "")


def tokens_match(given: str, expected: str) -> bool:
    """Constant-time comparison that also refuses the empty token."""
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def unauthorized() -> web.Response:
    """The one answer every unauthenticated request gets."""
    return web.Response(status=401, text=UNAUTHORIZED_BODY)


def _wants_page(request: web.Request) -> bool:
    """A browser navigation (HTML page), as opposed to an API or event call."""
    path = request.path
    return request.method == "GET" and not (
        path.startswith("/api/") or path.startswith("/static/") or path == "/metrics"
    )


def _url_without_token(request: web.Request) -> str:
    query = {k: v for k, v in request.query.items() if k != "token"}
    return str(URL.build(path=request.path, query=query))


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Let through only requests that carry the right token; see the module docstring."""
    config = request.app[CONFIG_KEY]
    expected = request.app[TOKEN_KEY]
    given = request_token(request, config.cookie_name)
    if not tokens_match(given, expected):
        return unauthorized()
    if "token" in request.query and "Authorization" not in request.headers and _wants_page(request):
        response = web.Response(status=303, headers={"Location": _url_without_token(request)})
        response.set_cookie(
            config.cookie_name,
            expected,
            path="/",
            httponly=True,
            samesite="Strict",
        )
        return response
    return await handler(request)
