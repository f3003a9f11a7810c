"""``Slots`` for work that must not pile up (one benchmark at a time, a few evaluations, large image decodes):
framework-free, so that code outside the Flask apps (the TorchServe handler's image decoding) can use it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import ApiError


class Slots:
    """At most ``size`` of one kind of work at once; a request beyond that is refused, not queued.

    With ``queue``, up to that many requests wait (at most ``max_wait_s``) for a slot before the next is refused:
    short work (an image decode) is not refused for a moment's overlap, and a burst holds no more than
    ``size + queue`` server threads.
    """

    def __init__(self, size: int, what: str, status: int = 429, retry_after_s: int = 5, queue: int = 0,
                 max_wait_s: float = 10.0):
        self._free = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._waiting = 0
        self.size, self.what, self.status, self.retry_after_s = size, what, status, retry_after_s
        self.queue, self.max_wait_s = queue, max_wait_s

    @contextmanager
    def take(self) -> Iterator[None]:
        """Hold one slot for the ``with`` block; ApiError (409 or 429, with Retry-After) when none is free
        (and the queue, if any, is full or the wait too long)."""
        if not self._free.acquire(blocking=False) and not self._wait_for_one():
            raise ApiError(f"{self.size} {self.what} already running"
                           f"{f' and {self.queue} waiting' if self.queue else ''}; try again when one has finished",
                           self.status, headers={"Retry-After": str(self.retry_after_s)})
        try:
            yield
        finally:
            self._free.release()

    def _wait_for_one(self) -> bool:
        """Wait in the queue for a slot, if it has room: whether one was taken."""
        with self._lock:
            if self._waiting >= self.queue:
                return False
            self._waiting += 1
        try:
            return self._free.acquire(timeout=self.max_wait_s)
        finally:
            with self._lock:
                self._waiting -= 1
