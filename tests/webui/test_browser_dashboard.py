"""The real page in headless Chromium against a fake-view server with real SSE.

Checks what an operator sees: peers up, a loss chart with one point per round,
hostile peer text shown as text (no script runs), live updates without reload,
and no Content-Security-Policy violations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

WAIT_MS = 10_000


async def open_dashboard(browser: Any, base_url: str, token: str) -> tuple[Any, list[str]]:
    """Open the dashboard; return the page and a list that collects alerts and console errors."""
    problems: list[str] = []
    context = await browser.new_context(viewport={"width": 1366, "height": 900})
    page = await context.new_page()
    page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
    page.on(
        "console",
        lambda msg: problems.append(f"console {msg.type}: {msg.text}")
        if msg.type == "error"
        else None,
    )
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    await page.goto(f"{base_url}/?token={token}")
    return page, problems


async def test_dashboard_shows_state_and_updates_live(
    browser: Any,
    client: TestClient[Any, Any],
    fake_view: Any,
    token: str,
    hostile_org: str,
    tmp_path: Path,
) -> None:
    expect = pytest.importorskip("playwright.async_api").expect
    base_url = str(client.make_url("")).rstrip("/")
    page, problems = await open_dashboard(browser, base_url, token)
    assert "token" not in page.url  # the secret left the address bar

    await expect(page.locator("#ov-peers-up")).to_have_text("2", timeout=WAIT_MS)
    await expect(page.locator("#live-text")).to_have_text("live", timeout=WAIT_MS)
    # Opened after activity: the daemon's recent events are there before any new one.
    history = await page.locator("#event-log li").all_text_contents()
    assert len(history) == 2 and "  state  " in history[0], history
    assert "  round_started  " in history[1], history
    assert "state" in (await page.text_content("#ov-last-event") or "")
    assert await page.text_content("#ov-round") == "3"
    assert await page.text_content("#ov-org") == "org-1-news"
    privacy = "ε 1.250 spent of 3, 1.750 left (δ 0.00250)"
    assert await page.text_content("#ov-privacy") == privacy

    # Live: the round number changes without a reload.
    await page.evaluate("window.__noReloadMarker = 42")
    fake_view.round = 7
    fake_view.status["state"] = "aggregating"
    fake_view.push({"type": "state", "state": "aggregating", "round": 7})
    await expect(page.locator("#ov-round")).to_have_text("7", timeout=WAIT_MS)
    # Round and state can land in separate renders; under load the state came a beat later.
    await expect(page.locator("#ov-state")).to_have_text("aggregating", timeout=WAIT_MS)
    assert await page.evaluate("window.__noReloadMarker") == 42

    # Peers: the hostile org name is shown literally, and nothing it contains ran.
    await page.click("a[data-tab=peers]")
    await page.wait_for_selector("#peers-table tbody tr >> nth=2", timeout=WAIT_MS)
    cells = await page.locator("#peers-table tbody td").all_text_contents()
    assert hostile_org in cells
    assert await page.locator("#peers-table img, #peers-table script").count() == 0

    # Training: one chart point per round for each loss series, and a table beside it.
    await page.click("a[data-tab=training]")
    points = await page.evaluate(
        "window.fedswarmDashboard.charts.roundLoss.data.datasets.map("
        "d => d.data.filter(v => typeof v === 'number').length)"
    )
    assert points == [2, 2, 2]
    assert await page.locator("#loss-table tbody tr").count() == 2
    await page.screenshot(path=str(tmp_path / "dashboard-training.png"), full_page=True)
    # [eval] sets: a series per set and measure, numbers charted per round, names as text.
    series = await page.evaluate(
        "window.fedswarmDashboard.charts.evalSets.data.datasets.map("
        "d => [d.label, d.data.filter(v => typeof v === 'number').length])"
    )
    assert ["qa: loss", 2] in series and ["qa: exact match", 2] in series, series
    assert ["<b>should-refuse</b>: refusal rate", 1] in series, series
    eval_cells = await page.locator("#eval-table tbody td").all_text_contents()
    assert await page.locator("#eval-table tbody tr").count() == 3
    assert "<b>should-refuse</b>" in eval_cells and "0.750" in eval_cells
    sample_texts = await page.locator("#samples pre").all_text_contents()
    assert "<script>alert(2)</script>" in sample_texts

    # Rounds at 1400 px: nothing pushed off the edge, the protocol on one line, the
    # note readable, and the apply step's parts shown.
    await page.set_viewport_size({"width": 1400, "height": 900})
    await page.click("a[data-tab=rounds]")
    await page.wait_for_selector("#rounds-table tbody tr >> nth=1", timeout=WAIT_MS)
    layout = await page.evaluate("""() => {
        const table = document.querySelector('#rounds-table');
        const protocol = table.querySelector('tbody tr td.protocol');
        const note = table.querySelector('tbody tr td.note');
        const text = document.createRange();
        text.selectNodeContents(protocol);
        return {overflow: table.scrollWidth - table.parentElement.clientWidth,
                protocolLines: text.getClientRects().length,
                noteRight: note.getBoundingClientRect().right, width: window.innerWidth};
    }""")
    assert layout["overflow"] <= 0, layout
    assert layout["protocolLines"] == 1, layout
    assert layout["noteRight"] <= layout["width"], layout
    parts = await page.locator("#rounds-table tbody tr >> nth=0").locator(".parts").text_content()
    assert parts is not None and "eval 0.05" in parts and "checkpoint" in parts

    # Security tab renders the parameters.
    await page.click("a[data-tab=security]")
    assert "128" in (await page.locator("#secagg-table").text_content() or "")
    budget = await page.locator("#privacy-table").text_content() or ""
    assert "Opacus RDP" in budget and "onerror=alert(3)" in budget  # shown, not run
    assert await page.locator("#privacy-table img").count() == 0

    await page.click("a[data-tab=overview]")
    await page.screenshot(path=str(tmp_path / "dashboard-fake.png"), full_page=True)

    # ?static=1, the documented screenshot view: filled once, then idle and marked ready.
    snapshot = await page.context.new_page()
    await snapshot.goto(f"{base_url}/?static=1#rounds")
    await snapshot.wait_for_selector("body[data-ready='1']", timeout=WAIT_MS)
    assert await snapshot.locator("#rounds-table tbody tr").count() == 2
    assert "snapshot" in (await snapshot.text_content("#live-text") or "")
    assert problems == []
