"""The daemon's HE worker is started and waited for at start-up, not inside round 1."""

from __future__ import annotations

import asyncio
import os

import pytest
from fedswarm.daemon.he_pool import HEPoolStartError, warm_up
from fedswarm.secagg.he import make_executor

pytestmark = pytest.mark.timeout(120)


def test_warm_up_returns_once_the_worker_runs_and_later_tasks_reuse_it() -> None:
    pool = make_executor(max_workers=1)
    try:
        pid, seconds = asyncio.run(warm_up(pool))
        assert pid != os.getpid()
        os.kill(pid, 0)  # the worker process exists now (raises if it does not)
        assert seconds > 0
        # The next task (a round's HE work) runs in that same, already started process.
        assert pool.submit(os.getpid).result(timeout=60) == pid
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_a_pool_that_cannot_start_a_worker_is_a_clear_error() -> None:
    pool = make_executor(max_workers=1)
    pool.shutdown(wait=True)
    with pytest.raises(HEPoolStartError, match="failed to start"):
        asyncio.run(warm_up(pool))


def test_a_worker_slower_than_the_limit_is_reported_not_waited_for() -> None:
    pool = make_executor(max_workers=1)
    try:
        # Spawning an interpreter that imports TenSEAL cannot finish within a millisecond.
        with pytest.raises(HEPoolStartError, match="not up after"):
            asyncio.run(warm_up(pool, timeout_s=0.001))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
