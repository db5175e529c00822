"""The offsite panel in headless Chromium against the fake view.

The tab stays hidden until the daemon says it runs offsite, then shows the role, the
package's layers, the fetch, the reveal line (as text) and a row per round.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from .test_browser_dashboard import WAIT_MS, open_dashboard

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


async def test_offsite_panel_appears_in_offsite_mode_with_package_and_rounds(
    browser: Any, client: TestClient[Any, Any], fake_view: Any, token: str
) -> None:
    expect = pytest.importorskip("playwright.async_api").expect
    base_url = str(client.make_url("")).rstrip("/")
    page, problems = await open_dashboard(browser, base_url, token)
    await expect(page.locator("#live-text")).to_have_text("live", timeout=WAIT_MS)
    link = page.locator(".tabs a[data-tab=offsite]")
    assert not await link.is_visible()  # not an offsite federation

    fake_view.status["mode"] = "offsite"
    fake_view.off["enabled"] = True
    fake_view.push({"type": "round_finished", "round": 1})
    await expect(link).to_be_visible(timeout=WAIT_MS)
    await link.click()
    rows = page.locator("#offsite-table tbody tr")
    await expect(rows).to_have_count(1, timeout=WAIT_MS)
    (row,) = await rows.all_text_contents()
    assert "0.810" in row and "5,000" in row
    await expect(page.locator("#off-role")).to_have_text("data member")
    await expect(page.locator("#off-layers")).to_contain_text("6 of 8 in the package")
    await expect(page.locator("#off-fetch")).to_have_text("verified (123.5 KB)")
    await expect(page.locator("#offsite-reveals")).to_contain_text("layers 3, 5 never leave")
    assert problems == []
