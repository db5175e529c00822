"""The FedMKT panel and live per-step loss in headless Chromium against the fake view.

The FedMKT tab stays hidden until the daemon says it runs FedMKT, then shows each
round's teacher -> student edges by org name (hostile names as text), the aligned
share and every model's public-set loss. A ``train_step`` event adds a point to the
per-step chart without a refetch; round 0 (the initial evaluation) is not charted.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from .page_polling import poll_page
from .test_browser_dashboard import WAIT_MS, open_dashboard

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

STEP_POINTS = "window.fedswarmDashboard.charts.stepLoss.data.datasets[0].data.length"


async def test_fedmkt_panel_shows_edges_and_steps_arrive_live(
    browser: Any, client: TestClient[Any, Any], fake_view: Any, token: str, hostile_org: str
) -> None:
    expect = pytest.importorskip("playwright.async_api").expect
    fake_view.train["rounds"].insert(
        0, {"round": 0, "train_loss": None, "eval_loss_before": None, "eval_loss_after": 9.0}
    )
    base_url = str(client.make_url("")).rstrip("/")
    page, problems = await open_dashboard(browser, base_url, token)
    await expect(page.locator("#live-text")).to_have_text("live", timeout=WAIT_MS)
    link = page.locator(".tabs a[data-tab=fedmkt]")
    assert not await link.is_visible()  # not a FedMKT federation

    # Round 0 is not a point on the per-round charts.
    labels = await page.evaluate("window.fedswarmDashboard.charts.roundLoss.data.labels")
    assert labels == ["1", "2"]

    # Let the refresh that the event stream's opening schedules land first: it
    # would replace the live point below with the fake daemon's stored steps,
    # which (unlike a real daemon's) never include it. A step stored now and an
    # event that asks for a refresh show when that has happened.
    fake_view.train["steps"].append({"round": 2, "step": 3, "loss": 3.1})
    fake_view.push({"type": "round", "round": 2})
    await expect(page.locator("#steps-summary")).to_contain_text("round 2 step 3", timeout=WAIT_MS)

    # Live per-step loss: one event, one more point, no refetch needed.
    before = await page.evaluate(STEP_POINTS)
    fake_view.push({"type": "train_step", "round": 3, "step": 0, "loss": 2.5})
    await poll_page(page, f"{STEP_POINTS} === {before + 1}", "one more step-loss point")
    await expect(page.locator("#steps-summary")).to_contain_text("round 3 step 0", timeout=WAIT_MS)

    # The daemon turns out to run FedMKT: a fedmkt event makes the tab appear.
    fake_view.status["mode"] = "fedmkt"
    fake_view.mkt["enabled"] = True
    fake_view.push({"type": "fedmkt", "round": 1})
    await expect(link).to_be_visible(timeout=WAIT_MS)
    await link.click()
    edges = page.locator("#fedmkt-table tbody .edge")
    await expect(edges).to_have_count(2, timeout=WAIT_MS)
    assert await edges.all_text_contents() == [
        f"{hostile_org} → org-1-news",
        "org-3-code → org-1-news",
    ]
    row = page.locator("#fedmkt-table tbody tr").first
    assert "62 %" in (await row.text_content() or "")
    assert await row.locator(".exchange").text_content() == "secure (group average)"
    assert await page.locator("#fedmkt-table .model-loss").all_text_contents() == [
        "org-1-news: 3.250", f"{hostile_org}: 2.500", "org-3-code: –",
    ]
    assert await page.locator("#fedmkt-table .model-loss.best").all_text_contents() == [
        f"{hostile_org}: 2.500"
    ]
    # the own-domain loss sits beside the public-set one, a rise at home marked
    own = page.locator("#fedmkt-table .own-loss.status-bad")
    assert await own.all_text_contents() == ["2.000 → 2.200 (+10.0 %)"]
    await expect(page.locator("#fedmkt-summary")).to_contain_text(
        "own-domain loss 4.000 before training, 2.200 now")
    assert await page.locator("#fedmkt-table img, #fedmkt-table script").count() == 0
    assert problems == []
