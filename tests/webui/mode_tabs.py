"""A mode's dashboard tab: hidden until the daemon says it runs that mode, then opened."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from .test_browser_dashboard import WAIT_MS, open_dashboard


async def open_mode_tab(
    browser: Any,
    client: TestClient[Any, Any],
    fake_view: Any,
    token: str,
    *,
    mode: str,
    panel: dict[str, Any],
    event: dict[str, Any],
) -> tuple[Any, list[str]]:
    """Check ``mode``'s tab is hidden, switch the fake daemon to ``mode`` (its ``panel``
    enabled, ``event`` pushed), wait for the tab and click it; returns the page and the
    list of alerts and console errors."""
    expect = pytest.importorskip("playwright.async_api").expect
    base_url = str(client.make_url("")).rstrip("/")
    page, problems = await open_dashboard(browser, base_url, token)
    await expect(page.locator("#live-text")).to_have_text("live", timeout=WAIT_MS)
    link = page.locator(f".tabs a[data-tab={mode}]")
    assert not await link.is_visible()  # the daemon has not said it runs this mode

    fake_view.status["mode"] = mode
    panel["enabled"] = True
    fake_view.push(event)
    await expect(link).to_be_visible(timeout=WAIT_MS)
    await link.click()
    return page, problems
