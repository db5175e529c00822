"""Security headers on every response, the 401s and the event stream included.

The page loads scripts only from its own origin (Chart.js is vendored, nothing
comes from a CDN), may not be framed (clickjacking), and the API sends no CORS
headers, so no other origin's script can read it even while the browser holds the
cookie. Applied in ``on_response_prepare`` so that streamed responses, static files
and error pages get them too.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: Final[dict[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook: stamp ``SECURITY_HEADERS`` on ``response``."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    response.headers.popall("Access-Control-Allow-Origin", None)
