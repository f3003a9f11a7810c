"""Slots with a short queue, and the image decodes they admit: large uploads wait briefly or are refused (429)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from servekit import images
from servekit.errors import ApiError
from servekit.images import image_to_input, png_bytes
from servekit.limits import Slots


class Holders:
    """``count`` threads that each take a slot (or wait in the queue for one) and hold it until ``release()``."""

    def __init__(self, slots: Slots, count: int):
        self.inside, self._lock, self._release = 0, threading.Lock(), threading.Event()
        self._threads = [threading.Thread(target=self._hold, args=(slots,)) for _ in range(count)]
        for thread in self._threads:
            thread.start()

    def _hold(self, slots: Slots) -> None:
        with slots.take():
            with self._lock:
                self.inside += 1
            self._release.wait()

    def release(self) -> None:
        self._release.set()
        for thread in self._threads:
            thread.join()


def wait_until(condition, timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_queued_request_gets_the_next_free_slot():
    slots = Slots(1, "decodes are", queue=1)
    first = Holders(slots, 1)
    wait_until(lambda: first.inside == 1)
    second = Holders(slots, 1)
    try:
        wait_until(lambda: slots._waiting == 1)
        time.sleep(0.2)
        assert second.inside == 0  # waiting in the queue, not refused
        first.release()
        wait_until(lambda: second.inside == 1)
    finally:
        first.release()
        second.release()


def test_beyond_the_slots_and_the_queue_a_request_is_refused_at_once():
    slots = Slots(2, "large image decodes are", retry_after_s=1, queue=3)
    holders = Holders(slots, 5)  # two running, three waiting
    try:
        wait_until(lambda: holders.inside == 2 and slots._waiting == 3)
        started = time.monotonic()
        with pytest.raises(ApiError) as refused:
            with slots.take():
                pass
        assert time.monotonic() - started < 0.5  # refused, not queued
        assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "1"}
        assert "2 large image decodes are already running and 3 waiting" in refused.value.message
    finally:
        holders.release()
    assert holders.inside == 5 and slots._waiting == 0  # every waiter got its turn
    with slots.take():  # free again
        pass


def test_a_request_waits_no_longer_than_max_wait():
    slots = Slots(1, "decodes are", queue=1, max_wait_s=0.2)
    holder = Holders(slots, 1)
    try:
        wait_until(lambda: holder.inside == 1)
        with pytest.raises(ApiError) as refused:
            with slots.take():
                pass
        assert refused.value.status == 429 and slots._waiting == 0
    finally:
        holder.release()


def _digit(size: int) -> bytes:
    """A white ``size`` x ``size`` PNG with a black bar: a digit on paper."""
    image = np.full((size, size), 255, np.uint8)
    image[size // 4: 3 * size // 4, size // 2 - size // 20: size // 2 + size // 20] = 0
    return png_bytes(image)


def test_when_the_large_decodes_are_full_a_large_upload_is_a_429_and_a_small_one_still_decodes():
    slots = images._large_decodes
    small, large = _digit(280), _digit(1000)  # 0.08 and 1 Mpx
    running = Holders(slots, slots.size)
    wait_until(lambda: running.inside == slots.size)
    queued = Holders(slots, slots.queue)
    try:
        wait_until(lambda: slots._waiting == slots.queue)
        assert image_to_input(small).shape == (28, 28, 1)  # no slot needed
        with pytest.raises(ApiError) as refused:
            image_to_input(large)
        assert refused.value.status == 429 and "Retry-After" in refused.value.headers
    finally:
        running.release()
        queued.release()
    assert image_to_input(large).shape == (28, 28, 1)
