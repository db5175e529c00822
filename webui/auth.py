"""Token authentication for every page and API call.

One shared secret (written by ``fedswarm init``) protects the dashboard. It may
arrive three ways, checked in this order, the first one present deciding:

1. ``Authorization: Bearer <token>`` — scripts and ``curl``.
2. ``?token=<token>`` — the link an operator opens first. For a page load we then
   set an HttpOnly, SameSite=Strict cookie and redirect to the same URL without the
   token, so the secret does not stay in the address bar, history or screenshots.
3. The cookie — the page's own ``fetch`` and ``EventSource`` calls.

The cookie never holds the token. Browsers do not separate cookies by port, so every
HTTP service on the host (another fedswarm daemon included) receives it. Its value is
``HMAC-SHA256(token, "fedswarm-dashboard-cookie")`` in hex: it opens this dashboard
but gives nobody the token itself (which also works for ``Authorization`` and ``?token=``).
Its name is ``fedswarm_`` plus 16 hex digits of ``HMAC-SHA256(token,
"fedswarm-dashboard-cookie-name")``: stable across restarts (the token file is), and
different for every daemon on the host (each has its own token), so two dashboards open
in one browser no longer overwrite each other's cookie. A cookie holding the raw token
is refused.

Anything else gets a bare 401: no page content and no hint about which part was
wrong, so a probe learns nothing but "not authorised". Comparisons run in constant
time.
"""

from __future__ import annotations

import hashlib
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


_COOKIE_VALUE_LABEL: Final = b"fedswarm-dashboard-cookie"
_COOKIE_NAME_LABEL: Final = b"fedswarm-dashboard-cookie-name"


def _hmac_hex(token: str, label: bytes) -> str:
    return hmac.new(token.encode(), label, hashlib.sha256).hexdigest()


def cookie_value(token: str) -> str:
    """What the dashboard cookie holds: ``HMAC-SHA256(token, label)`` in hex, never the token."""
    return _hmac_hex(token, _COOKIE_VALUE_LABEL)


def cookie_name(token: str) -> str:
    """This daemon's cookie name: stable for one token, different between tokens."""
    return "fedswarm_" + _hmac_hex(token, _COOKIE_NAME_LABEL)[:16]


def request_token(request: web.Request, cookie_name: str) -> tuple[str, bool]:
    """What this request presents, and whether it came from the cookie.

    ``("", False)`` when it presents nothing. A cookie's value is the derived
    :func:`cookie_value`, the header's and the query's are the raw token.
    """
    header = request.headers.get("Authorization")
    if header is not None:
        if header.startswith("Bearer "):
            return header[len("Bearer ") :].strip(), False
        return "", False
    if "token" in request.query:
        return request.query["token"], False
    return request.cookies.get(cookie_name, ""), True


def tokens_match(given: str, expected: str) -> bool:
    """Constant-time comparison that also refuses the empty token."""
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def effective_cookie_name(token: str, config: DashboardConfig) -> str:
    """The configured cookie name, or the one derived from ``token``."""
    return config.cookie_name or cookie_name(token)


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
    token = request.app[TOKEN_KEY]
    name = effective_cookie_name(token, config)
    given, from_cookie = request_token(request, name)
    if not tokens_match(given, cookie_value(token) if from_cookie else token):
        return unauthorized()
    if "token" in request.query and "Authorization" not in request.headers and _wants_page(request):
        response = web.Response(status=303, headers={"Location": _url_without_token(request)})
        response.set_cookie(
            name,
            cookie_value(token),
            path="/",
            httponly=True,
            samesite="Strict",
        )
        return response
    return await handler(request)
