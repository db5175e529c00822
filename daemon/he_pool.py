"""Start the daemon's HE worker process at start-up, not inside its first round.

``ProcessPoolExecutor`` starts its worker on the first task. A spawn worker has to
re-import the daemon's main module (torch, transformers, peft) and TenSEAL before it
can encrypt anything: seconds of CPU, once per daemon lifetime. Left lazy, every
daemon of a secure federation paid it inside round 1, in the middle of secure
aggregation and at the same moment as its peers' training, so the first round was
slower than every other and a federation's round-1 deadline had to absorb it.

``warm_up`` sends the pool a no-op task and waits for it: when it returns, the worker
is running and has finished importing. The daemon waits for it before announcing
itself to its peers, so no round starts on a half-started worker; it runs alongside
the model load, which is the other slow part of start-up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time

log = logging.getLogger("fedswarm.daemon.he_pool")

WARM_UP_TIMEOUT_S = 180.0


class HEPoolStartError(Exception):
    """The HE worker process did not start (it crashed, or took longer than allowed)."""


async def warm_up(pool: concurrent.futures.ProcessPoolExecutor,
                  timeout_s: float = WARM_UP_TIMEOUT_S) -> tuple[int, float]:
    """Start ``pool``'s worker and wait until it runs a task; returns (worker pid, seconds).

    Submitting only forks and hands the child its start-up data, so the event loop is
    not held; the waiting happens on the loop. Failure raises ``HEPoolStartError``:
    the caller decides whether a daemon without a ready worker may go on.
    """
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        pid = await asyncio.wait_for(loop.run_in_executor(pool, os.getpid), timeout_s)
    except TimeoutError as exc:
        raise HEPoolStartError(f"HE worker not up after {timeout_s:.0f} s") from exc
    except (concurrent.futures.BrokenExecutor, OSError, RuntimeError) as exc:
        raise HEPoolStartError(f"HE worker failed to start: {exc}") from exc
    return pid, time.monotonic() - started
