"""Bounded thread pools for the gateway's fan-out: one for interactive calls, one for batch work.

Interactive calls (/predict, /health, /services, model lookups) and batch
work (evaluations over the test set) never share threads, so a few long
evaluations cannot starve predictions. Each pool bounds both the calls it
runs and those it lets wait; beyond that a request is refused with 503 at
once instead of queueing without end. Results are awaited with a timeout:
work that has not even started by then is dropped.

Every thread here is a daemon: a call stuck on a slow service must never keep the gateway alive after
SIGTERM (concurrent.futures' ThreadPoolExecutor joins its threads at interpreter exit, which made a stopped
gateway wait for its slowest call).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from servekit.errors import ApiError


class PoolTimeout(Exception):
    """The work gave no result within the pool's time."""


class DaemonExecutor(Executor):
    """A thread pool of daemon threads (started as work arrives, up to ``max_workers``): what
    ThreadPoolExecutor does, except that the process may exit while a call is still running."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "daemon-pool"):
        self.max_workers, self.thread_name_prefix = max_workers, thread_name_prefix
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut_down = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)``; its Future."""
        future: Future = Future()
        with self._lock:
            if self._shut_down:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._queue.put((future, fn, args, kwargs))
            if len(self._threads) < self.max_workers:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self.thread_name_prefix}_{len(self._threads)}")
                thread.start()
                self._threads.append(thread)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new work; the threads end once the queue is done (``wait``: join them)."""
        with self._lock:
            self._shut_down = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()
        for _ in threads:
            self._queue.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # the caller gets it from the Future, as with ThreadPoolExecutor
                future.set_exception(exc)
            else:
                future.set_result(result)


class BoundedPool:
    """``workers`` threads, at most ``queue_limit`` more calls waiting; results awaited for ``timeout_s``."""

    def __init__(self, name: str, workers: int, queue_limit: int, timeout_s: float):
        self.name, self.workers, self.queue_limit, self.timeout_s = name, workers, queue_limit, timeout_s
        self._executor = DaemonExecutor(workers, thread_name_prefix=f"{name}-pool")
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
