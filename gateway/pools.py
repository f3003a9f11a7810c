"""Bounded thread pools for the gateway's fan-out: one for interactive calls, one for batch work.

Interactive calls (/predict, /health, /services, model lookups) and batch
work (evaluations over the test set) never share threads, so a few long
evaluations cannot starve predictions. Each pool bounds both the calls it
runs and those it lets wait; beyond that a request is refused with 503 at
once instead of queueing without end. Results are awaited with a timeout:
work that has not even started by then is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from servekit.errors import ApiError


class PoolTimeout(Exception):
    """The work gave no result within the pool's time."""


class BoundedPool:
    """``workers`` threads, at most ``queue_limit`` more calls waiting; results awaited for ``timeout_s``."""

    def __init__(self, name: str, workers: int, queue_limit: int, timeout_s: float):
        self.name, self.workers, self.queue_limit, self.timeout_s = name, workers, queue_limit, timeout_s
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{name}-pool")
        self._admitted = threading.BoundedSemaphore(workers + queue_limit)

    @property
    def in_use(self) -> int:
        """Calls running or waiting now."""
        return self.workers + self.queue_limit - self._admitted._value

    def submit(self, work: Callable[..., Any], *args: Any) -> Future:
        """Run ``work(*args)`` on the pool; ApiError 503 when it is full (running and waiting)."""
        if not self._admitted.acquire(blocking=False):
            raise ApiError(f"the gateway's {self.name} pool is full ({self.workers} running, {self.queue_limit} "
                           "waiting); try again shortly", 503, headers={"Retry-After": "1"})
        try:
            future = self._executor.submit(work, *args)
        except BaseException:
            self._admitted.release()
            raise
        future.add_done_callback(lambda _: self._admitted.release())
        return future

    def result(self, future: Future, timeout_s: float | None = None) -> Any:
        """The work's result (or its exception raised); PoolTimeout when none came in time."""
        try:
            return future.result(timeout=self.timeout_s if timeout_s is None else timeout_s)
        except FutureTimeout:
            future.cancel()  # not started yet (the pool was busy): it never will be
            raise PoolTimeout(f"no result within {self.timeout_s if timeout_s is None else timeout_s:g} s "
                              f"(the {self.name} pool is busy)") from None
