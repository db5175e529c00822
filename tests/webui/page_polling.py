"""Wait for a page condition without Playwright's ``wait_for_function``.

``wait_for_function`` with a string predicate polls by evaluating it with ``eval``
inside the page, which the dashboard's Content Security Policy (``script-src 'self'``)
forbids: it passes only when the condition is already true at its first, CSP-free
check, so it fails on a loaded machine. ``page.evaluate`` is not bound by the CSP.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def poll_page(page: Any, expression: str, what: str, attempts: int = 120) -> Any:
    """Evaluate ``expression`` every 0.5 s until it is truthy; fail after ``attempts``."""
    for _ in range(attempts):
        value = await page.evaluate(expression)
        if value:
            return value
        await asyncio.sleep(0.5)
    raise AssertionError(f"the page never showed {what}")
