"""The FedKSeed panel in headless Chromium against the fake view.

The tab stays hidden until the daemon says it runs FedKSeed, then shows a row per
round: bytes, losses, seeds in use of K, and the parameters' fingerprint.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from .mode_tabs import open_mode_tab
from .test_browser_dashboard import WAIT_MS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


async def test_fedkseed_panel_appears_in_fedkseed_mode_with_a_row_per_round(
    browser: Any, client: TestClient[Any, Any], fake_view: Any, token: str
) -> None:
    expect = pytest.importorskip("playwright.async_api").expect
    page, problems = await open_mode_tab(
        browser, client, fake_view, token, mode="fedkseed", panel=fake_view.kseed,
        event={"type": "fedkseed", "round": 1},
    )
    rows = page.locator("#fedkseed-table tbody tr")
    await expect(rows).to_have_count(2, timeout=WAIT_MS)
    newest, oldest = await rows.all_text_contents()
    assert "local_only" in newest
    assert "16,416" in oldest and "88 of 1024" in oldest and "0123456789abcdef" in oldest
    await expect(page.locator("#fedkseed-summary")).to_have_text("2 FedKSeed round(s) recorded")
    assert problems == []
