"""The dashboard of a real 3-daemon federation on loopback, in headless Chromium.

The acceptance check of issue #7: the overview shows 2 peers up, the loss chart has
a point for each round, and a live event updates the round number without a
reload. Set FEDSWARM_UPDATE_SCREENSHOT=1 to refresh docs/img/dashboard.png.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from .page_polling import poll_page

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

ROUNDS = 6
LOCAL_STEPS = 20
API_UP_TIMEOUT_S = 300.0
ALL_ROUNDS_TIMEOUT_S = 600.0
UI_WAIT_MS = 60_000
REPO_ROOT = Path(__file__).resolve().parents[2]


def prepare_with_cached_model(federation: Any) -> None:
    """The federation builds the demo model once per machine into its shared cache."""
    federation.prepare()


def wait_for_api(peer: Any) -> dict[str, Any]:
    """Poll the first daemon's API until it answers (bounded)."""
    deadline = time.monotonic() + API_UP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not peer.running():
            raise AssertionError(f"{peer.org} exited early; see {peer.log_path}")
        status = peer.try_status()
        if status is not None:
            return dict(status)
        time.sleep(0.2)
    raise AssertionError(f"{peer.org}'s API did not come up in {API_UP_TIMEOUT_S:.0f} s")


def screenshot_path(tmp_path: Path) -> Path:
    if os.environ.get("FEDSWARM_UPDATE_SCREENSHOT") == "1":
        target = REPO_ROOT / "docs" / "img" / "dashboard.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        return target
    return tmp_path / "dashboard.png"


async def test_dashboard_of_three_daemon_federation(browser: Any, tmp_path: Path) -> None:
    runner = pytest.importorskip(
        "fedswarm.daemon.demo.local_federation", reason="LocalFederation is not available"
    )
    expect = pytest.importorskip("playwright.async_api").expect
    federation = runner.LocalFederation(
        tmp_path / "federation", peers=3, rounds=ROUNDS, local_steps=LOCAL_STEPS,
        batch_size=4, max_length=64,
    )
    try:
        await asyncio.to_thread(prepare_with_cached_model, federation)
        await asyncio.to_thread(federation.start)
        peer = federation.peers[0]
        await asyncio.to_thread(wait_for_api, peer)

        problems: list[str] = []
        context = await browser.new_context(viewport={"width": 1366, "height": 900})
        page = await context.new_page()
        page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        await page.goto(f"{peer.api_url}/?token={peer.token}")
        assert "token" not in page.url
        await expect(page.locator("#live-text")).to_have_text("live", timeout=UI_WAIT_MS)
        await page.evaluate("window.__noReloadMarker = 7")
        first_round = await page.text_content("#ov-round")
        assert first_round != str(ROUNDS), "the federation finished before the page opened"

        # Live: round events move the round number to the last round; no reload happens.
        await expect(page.locator("#ov-round")).to_have_text(
            str(ROUNDS), timeout=ALL_ROUNDS_TIMEOUT_S * 1000
        )
        assert await page.evaluate("window.__noReloadMarker") == 7
        assert await page.evaluate("window.fedswarmDashboard.events") > 0
        await expect(page.locator("#ov-peers-up")).to_have_text("2", timeout=UI_WAIT_MS)

        await asyncio.to_thread(federation.wait_rounds, ROUNDS, ALL_ROUNDS_TIMEOUT_S)
        training = await asyncio.to_thread(peer.get, "/api/training")
        rounds_done = sorted(r["round"] for r in training["rounds"])
        assert rounds_done == list(range(1, ROUNDS + 1))
        # A point per round in the eval-after-aggregation series, once the page caught up.
        await poll_page(
            page,
            "(() => { const c = window.fedswarmDashboard.charts.roundLoss;"
            f" return c && c.data.datasets[2].data.filter(v => typeof v === 'number').length"
            f" === {ROUNDS}; }})()",
            "a loss point for every round",
        )
        labels = await page.evaluate("window.fedswarmDashboard.charts.roundLoss.data.labels")
        assert [int(label) for label in labels] == rounds_done
        assert await page.evaluate("window.__noReloadMarker") == 7

        for tab in ("peers", "rounds", "training", "security"):  # kept as test artefacts
            await page.click(f"a[data-tab={tab}]")
            await page.screenshot(path=str(tmp_path / f"dashboard-{tab}.png"), full_page=True)
        await page.click("a[data-tab=overview]")
        await page.screenshot(path=str(screenshot_path(tmp_path)), full_page=True)
        assert problems == []
    finally:
        await asyncio.to_thread(federation.stop)
