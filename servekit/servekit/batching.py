"""Dynamic batching, after Triton's dynamic batcher: concurrent requests for one model run as one model call.

The services batch each model's calls; the gateway batches its fan-out (one
call per service carries the images of every /predict that arrived together).

A request thread puts its images in the model's queue. One of the waiting
threads at a time is the leader: it takes what is queued (up to ``max_batch``
images, first come first served), runs the model once on all of it, and hands
each request its own rows. Requests that arrive meanwhile queue for the next
call, so under load each call takes what piled up during the previous one.

Unlike a fixed queue delay, the leader waits (at most ``window_s``) only while
requests it knows of are still being read: a lone request never waits, and
its latency stays that of an unbatched call.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# run(images, request_ids) -> (one output row per image, anything the caller wants back with them, e.g. the model
# version). ``request_ids``: one per request of the batch, in order (a request may bring several images). The
# outputs are anything sliced by rows: a NumPy array of probabilities, a list of answers.
BatchFunction = Callable[[np.ndarray, list[str]], tuple[Sequence[Any], Any]]


def describe_batching(max_batch: int, window_ms: float) -> dict:
    """Batching settings as /health shows them (the services' MAX_BATCH, BATCH_WINDOW_MS; the gateway's)."""
    return {"max_batch": max_batch, "window_ms": window_ms, "enabled": max_batch > 1 and window_ms > 0}


@dataclass
class BatchResult:
    """One request's rows of a batched call, and what the call was."""

    outputs: Sequence[Any]  # this request's rows of the batch's outputs (probabilities, answers)
    tag: Any  # what the batch function returned beside the outputs (the version that ran)
    batch_size: int  # images in the model call this request was part of
    inference_ms: float  # the model call's time (shared by every request of the batch)
    queue_ms: float  # from the request's arrival to the start of its model call


@dataclass
class _Pending:
    images: np.ndarray
    request_id: str = ""
    arrived: float = field(default_factory=time.perf_counter)
    result: BatchResult | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None


class DynamicBatcher:
    """Queues one model's requests and runs them in batches of at most ``max_batch`` images.

    ``window_s`` 0 (or ``max_batch`` 1) turns batching off: every request is its own call.
    ``on_batch(images, seconds)`` is told the size and duration of every call (for /metrics).
    """

    def __init__(self, run: BatchFunction, max_batch: int, window_s: float,
                 on_batch: Callable[[int, float], None] | None = None):
        self.run, self.max_batch, self.window_s = run, max(1, max_batch), max(0.0, window_s)
        self.on_batch = on_batch or (lambda images, seconds: None)
        self._changed = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._leading = False
        self._gathering = False  # the leader is waiting for announced requests (the only wait they end)
        self._reading = 0  # requests announced by ``incoming()`` that have not queued yet

    @property
    def enabled(self) -> bool:
        return self.window_s > 0 and self.max_batch > 1

    @contextmanager
    def incoming(self) -> Iterator[None]:
        """Announce a request while its input is read, so that a forming batch waits for it (briefly)."""
        with self._changed:
            self._reading += 1
        try:
            yield
        finally:
            with self._changed:
                self._reading -= 1
                if self._gathering:  # waking every waiting request per arrival cost more than the model call
                    self._changed.notify_all()

    def predict(self, images: np.ndarray, request_id: str = "") -> BatchResult:
        """This request's outputs, computed alone or in a batch with others (``request_id``: for the batch's logs)."""
        pending = _Pending(images, request_id)
        if not self.enabled:
            self._call([pending])
        else:
            self._queue_and_wait(pending)
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _queue_and_wait(self, pending: _Pending) -> None:
        """Queue the request, then lead batches until a batch (this thread's or another's) has answered it."""
        with self._changed:
            self._queue.append(pending)
            if self._gathering:
                self._changed.notify_all()
        while True:
            with self._changed:
                while not pending.done and self._leading:
                    self._changed.wait()
                if pending.done:
                    break
                self._leading = True
                batch = self._gather()
            try:
                self._call(batch)
            finally:
                with self._changed:
                    self._leading = False
                    self._changed.notify_all()

    def _gather(self) -> list[_Pending]:
        """(Lock held.) Wait while more requests are on their way and there is room, then take a batch."""
        deadline = time.perf_counter() + self.window_s
        while self._queued_images() < self.max_batch and self._reading > 0:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            self._gathering = True
            try:
                self._changed.wait(left)
            finally:
                self._gathering = False
        batch = [self._queue.popleft()]
        images = len(batch[0].images)
        while self._queue and images + len(self._queue[0].images) <= self.max_batch:
            images += len(self._queue[0].images)
            batch.append(self._queue.popleft())
        return batch

    def _queued_images(self) -> int:
        return sum(len(p.images) for p in self._queue)

    def _call(self, batch: list[_Pending]) -> list[_Pending]:
        """One model call for the whole batch; each request gets its rows (or the call's error).

        Every request of the batch ends done, whatever fails: one left without a result would wait forever.
        """
        started = time.perf_counter()
        try:
            images = batch[0].images if len(batch) == 1 else np.concatenate([p.images for p in batch])
            outputs, tag = self.run(images, [p.request_id for p in batch])
            inference_ms = (time.perf_counter() - started) * 1000.0
            self.on_batch(len(images), inference_ms / 1000.0)
            offset = 0
            for pending in batch:
                rows = len(pending.images)
                pending.result = BatchResult(outputs[offset: offset + rows], tag, len(images), inference_ms,
                                             (started - pending.arrived) * 1000.0)
                offset += rows
        except BaseException as exc:  # every request of the batch gets the error, not only the leader's
            for pending in batch:
                if pending.result is None:
                    pending.error = exc
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt, SystemExit: after the others have been told
        return batch
