"""The page is self-contained: vendored Chart.js with its licence, no CDN, no inline code,
and no HTML-parsing DOM sinks for data (untrusted peer input stays text)."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from aiohttp.test_utils import TestClient

STATIC = resources.files("fedswarm.webui") / "static"
VENDOR = STATIC / "vendor" / "chartjs-4.4.9"


def test_chartjs_is_vendored_pinned_with_licence() -> None:
    bundle = (VENDOR / "chart.umd.js").read_text()
    assert bundle.startswith("/*!\n * Chart.js v4.4.9")
    assert "MIT" in (VENDOR / "LICENSE.md").read_text()


def test_page_loads_scripts_and_styles_only_from_own_origin() -> None:
    html = (STATIC / "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assert sources, "the page references its assets"
    assert all(s.startswith("/static/") for s in sources), sources
    assert "/static/vendor/chartjs-4.4.9/chart.umd.js" in sources


def test_page_has_no_inline_script_or_style_the_csp_would_block() -> None:
    html = (STATIC / "index.html").read_text()
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html) is None
    assert "<style" not in html
    assert re.search(r"\son[a-z]+=", html) is None
    assert "style=" not in html


def test_dashboard_script_never_parses_data_as_html() -> None:
    script = (STATIC / "dashboard.js").read_text()
    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in code, sink


async def test_static_files_are_served_with_their_types(
    client: TestClient[Any, Any], auth: dict[str, str]
) -> None:
    js = await client.get("/static/vendor/chartjs-4.4.9/chart.umd.js", headers=auth)
    assert js.status == 200
    assert js.content_type in ("application/javascript", "text/javascript")
    css = await client.get("/static/dashboard.css", headers=auth)
    assert css.content_type == "text/css"


async def test_static_route_does_not_escape_its_folder(
    client: TestClient[Any, Any], auth: dict[str, str]
) -> None:
    response = await client.get("/static/..%2f..%2fapp.py", headers=auth)
    assert response.status in (403, 404)
