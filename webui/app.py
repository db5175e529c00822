"""The local JSON API and dashboard of one daemon.

Bound to loopback by the daemon. Every request needs the token that
``fedswarm init`` wrote (see ``auth.py`` for the three ways to present it);
anything else gets a bare 401. The single page at ``/`` reads only the same JSON
API and event stream that operators script against (documented in docs/api.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web

from .auth import CONFIG_KEY, TOKEN_KEY, check_token_strength, request_token, require_token
from .config import DashboardConfig
from .errors import StaticAssetsMissingError
from .events import EventStreams, stream_events
from .headers import add_security_headers
from .jsonsafe import dumps
from .view import DaemonView

__all__ = [
    "CONFIG_KEY",
    "TOKEN_KEY",
    "VIEW_KEY",
    "create_app",
    "request_token",
    "require_token",
]

log = logging.getLogger(__name__)

VIEW_KEY: web.AppKey[DaemonView] = web.AppKey("view", DaemonView)  # type: ignore[type-abstract]
STREAMS_KEY: web.AppKey[EventStreams] = web.AppKey("event_streams", EventStreams)
INDEX_KEY: web.AppKey[bytes] = web.AppKey("index_html", bytes)


def _json(request: web.Request, read: Callable[[DaemonView], Any]) -> web.Response:
    """Answer with ``read(view)`` as strict JSON; a failing view gets a 503, not a crash."""
    try:
        data = read(request.app[VIEW_KEY])
    except Exception:
        log.exception("dashboard: the daemon view failed to answer %s", request.path)
        return web.json_response(
            {"error": "the daemon could not answer this request; see its log"}, status=503
        )
    return web.json_response(text=dumps(data))


async def api_status(request: web.Request) -> web.Response:
    return _json(request, lambda view: view.overview())


async def api_peers(request: web.Request) -> web.Response:
    return _json(request, lambda view: view.peers())


async def api_rounds(request: web.Request) -> web.Response:
    most = request.app[CONFIG_KEY].rounds_limit
    raw = request.query.get("limit", str(most))
    if not raw.isdigit() or int(raw) < 1:
        return web.json_response(
            {"error": "limit must be a positive integer", "given": raw[:40]}, status=400
        )
    limit = min(int(raw), most)
    return _json(request, lambda view: view.rounds(limit))


async def api_training(request: web.Request) -> web.Response:
    return _json(request, lambda view: view.training())


async def api_evaluation(request: web.Request) -> web.Response:
    return _json(request, lambda view: view.evaluation())


async def api_security(request: web.Request) -> web.Response:
    return _json(request, lambda view: view.security())


async def api_traffic(request: web.Request) -> web.Response:
    return _json(request, lambda view: view.traffic())


async def api_fedmkt(request: web.Request) -> web.Response:
    return _json(request, lambda view: view.fedmkt())


async def api_fedkseed(request: web.Request) -> web.Response:
    return _json(request, lambda view: view.fedkseed())


async def api_offsite(request: web.Request) -> web.Response:
    return _json(request, lambda view: view.offsite())


async def api_events_recent(request: web.Request) -> web.Response:
    return _json(request, lambda view: view.recent_events(50))


async def api_events(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG_KEY]
    return await stream_events(
        request,
        request.app[VIEW_KEY],
        request.app[STREAMS_KEY],
        keepalive_s=config.keepalive_s,
        capacity=config.client_buffer_events,
    )


async def metrics(request: web.Request) -> web.Response:
    try:
        text = request.app[VIEW_KEY].metrics_text()
    except Exception:
        log.exception("dashboard: the daemon view failed to produce metrics")
        return web.Response(status=503, text="# metrics unavailable; see the daemon log\n")
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def index(request: web.Request) -> web.Response:
    return web.Response(body=request.app[INDEX_KEY], content_type="text/html", charset="utf-8")


def static_dir() -> Any:
    """The packaged ``static/`` folder (HTML, JS, CSS, vendored Chart.js)."""
    folder = resources.files("fedswarm.webui") / "static"
    if not (folder / "index.html").is_file():
        raise StaticAssetsMissingError(
            f"dashboard files missing under {folder}; reinstall fedswarm with its package data"
        )
    return folder


async def _end_event_streams(app: web.Application) -> None:
    app[STREAMS_KEY].close_all()


def create_app(
    view: DaemonView, token: str, config: DashboardConfig | None = None
) -> web.Application:
    """Build the aiohttp application for ``view``, protected by ``token``.

    Raises ``WeakTokenError`` for a token shorter than 16 characters and
    ``StaticAssetsMissingError`` when the packaged page files are missing.
    """
    check_token_strength(token)
    config = config or DashboardConfig()
    folder = static_dir()
    app = web.Application(middlewares=[require_token])
    app[VIEW_KEY] = view
    app[TOKEN_KEY] = token
    app[CONFIG_KEY] = config
    app[STREAMS_KEY] = EventStreams()
    app[INDEX_KEY] = (folder / "index.html").read_bytes()
    app.on_response_prepare.append(add_security_headers)
    app.on_shutdown.append(_end_event_streams)
    app.router.add_get("/", index)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/api/peers", api_peers)
    app.router.add_get("/api/rounds", api_rounds)
    app.router.add_get("/api/training", api_training)
    app.router.add_get("/api/evaluation", api_evaluation)
    app.router.add_get("/api/security", api_security)
    app.router.add_get("/api/traffic", api_traffic)
    app.router.add_get("/api/fedmkt", api_fedmkt)
    app.router.add_get("/api/fedkseed", api_fedkseed)
    app.router.add_get("/api/offsite", api_offsite)
    app.router.add_get("/api/events", api_events)
    app.router.add_get("/api/events/recent", api_events_recent)
    app.router.add_get("/metrics", metrics)
    app.router.add_static("/static/", path=str(folder), follow_symlinks=False)
    return app
