"""The offsite panel in headless Chromium against the fake view.

The tab stays hidden until the daemon says it runs offsite, then shows the role, the
package's layers, the fetch, the reveal line (as text) and a row per round.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from .mode_tabs import open_mode_tab
from .test_browser_dashboard import WAIT_MS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


async def test_offsite_panel_appears_in_offsite_mode_with_package_and_rounds(
    browser: Any, client: TestClient[Any, Any], fake_view: Any, token: str
) -> None:
    expect = pytest.importorskip("playwright.async_api").expect
    page, problems = await open_mode_tab(
        browser, client, fake_view, token, mode="offsite", panel=fake_view.off,
        event={"type": "round_finished", "round": 1},
    )
    rows = page.locator("#offsite-table tbody tr")
    await expect(rows).to_have_count(1, timeout=WAIT_MS)
    (row,) = await rows.all_text_contents()
    assert "0.810" in row and "5,000" in row
    await expect(page.locator("#off-role")).to_have_text("data member")
    await expect(page.locator("#off-layers")).to_contain_text("6 of 8 in the package")
    await expect(page.locator("#off-fetch")).to_have_text("verified (123.5 KB)")
    await expect(page.locator("#offsite-reveals")).to_contain_text("layers 3, 5 never leave")
    assert problems == []
