"""The dynamic batcher: each request gets its own rows back, batches form under load and never exceed MAX_BATCH."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from servekit.batching import DynamicBatcher


class RecordingModel:
    """A stand-in model whose answer identifies its input: row i -> [mean of image i] * 10; records call sizes."""

    def __init__(self, seconds: float = 0.01, fail: bool = False):
        self.seconds, self.fail, self.calls = seconds, fail, []
        self.lock = threading.Lock()

    def __call__(self, images: np.ndarray, request_ids: list[str]):
        with self.lock:
            self.calls.append(len(images))
        time.sleep(self.seconds)  # a model call long enough for requests to pile up behind it
        if self.fail:
            raise RuntimeError("model exploded")
        means = images.reshape(len(images), -1).mean(axis=1)
        return np.repeat(means[:, None], 10, axis=1), "v7"


def image(value: float, count: int = 1) -> np.ndarray:
    return np.full((count, 28, 28, 1), value, np.float32)


def run_concurrently(batcher: DynamicBatcher, values: list[float]) -> dict[float, object]:
    results, errors = {}, []

    def one(value: float) -> None:
        try:
            results[value] = batcher.predict(image(value))
        except Exception as exc:  # collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(v,)) for v in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results if not errors else {"errors": errors}


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows():
    model, sizes = RecordingModel(), []
    batcher = DynamicBatcher(model, max_batch=8, window_s=0.05, on_batch=lambda images, seconds: sizes.append(images))
    values = [i / 100 for i in range(40)]
    results = run_concurrently(batcher, values)
    assert sorted(results) == values
    for value, result in results.items():
        assert result.outputs.shape == (1, 10)
        assert result.outputs[0, 0] == pytest.approx(value)
        assert result.tag == "v7" and 1 <= result.batch_size <= 8
    assert sum(model.calls) == 40 and max(model.calls) <= 8
    assert max(model.calls) > 1, f"40 concurrent requests never shared a call: {model.calls}"
    assert sizes == model.calls


def test_a_lone_request_does_not_wait_for_the_window():
    batcher = DynamicBatcher(RecordingModel(seconds=0), max_batch=32, window_s=5.0)
    started = time.perf_counter()
    result = batcher.predict(image(0.5))
    assert time.perf_counter() - started < 2.0  # far below the 5 s window: nobody else was on the way
    assert result.batch_size == 1


def test_a_forming_batch_waits_for_a_request_still_being_read():
    model = RecordingModel(seconds=0)
    batcher = DynamicBatcher(model, max_batch=32, window_s=5.0)
    with batcher.incoming():  # this request is "reading its input" while another queues
        other = threading.Thread(target=lambda: results.append(batcher.predict(image(0.25))))
        results = []
        other.start()
        time.sleep(0.3)
        assert not results, "the queued request ran without waiting for the announced one"
        mine = batcher.predict(image(0.75))  # queues; the announced request is now here too
    other.join(10)
    assert mine.batch_size == 2 and results[0].batch_size == 2
    assert mine.outputs[0, 0] == pytest.approx(0.75) and results[0].outputs[0, 0] == pytest.approx(0.25)
    assert model.calls == [2]


def test_multi_image_requests_fill_batches_without_exceeding_the_limit():
    model = RecordingModel()
    batcher = DynamicBatcher(model, max_batch=10, window_s=0.05)
    results, threads = [], []
    for value in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        thread = threading.Thread(target=lambda v=value: results.append((v, batcher.predict(image(v, 4)))))
        threads.append(thread)
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 6 and max(model.calls) <= 10 and sum(model.calls) == 24
    for value, result in results:
        assert result.outputs.shape == (4, 10)
        assert np.allclose(result.outputs, value)


def test_an_error_reaches_every_request_of_the_batch_and_the_batcher_recovers():
    model = RecordingModel(fail=True)
    batcher = DynamicBatcher(model, max_batch=8, window_s=0.05)
    outcome = run_concurrently(batcher, [0.1, 0.2, 0.3, 0.4])
    assert len(outcome["errors"]) == 4 and all("exploded" in str(e) for e in outcome["errors"])
    model.fail = False
    assert batcher.predict(image(0.5)).outputs[0, 0] == pytest.approx(0.5)


@pytest.mark.parametrize(("max_batch", "window_s"), [(32, 0.0), (1, 0.05)])
def test_batching_off_runs_every_request_alone(max_batch, window_s):
    model = RecordingModel()
    batcher = DynamicBatcher(model, max_batch=max_batch, window_s=window_s)
    results = run_concurrently(batcher, [0.1, 0.2, 0.3, 0.4, 0.5])
    assert len(results) == 5 and model.calls == [1] * 5


def test_outputs_may_be_a_list_and_the_batch_function_gets_the_request_ids_in_order():
    calls = []

    def answers(images: np.ndarray, request_ids: list[str]):  # what the gateway's fan-out returns: one answer per row
        calls.append(list(request_ids))
        time.sleep(0.05)
        return [{"mean": float(row.mean()), "for": rid} for row, rid in zip(images, request_ids, strict=True)], None

    batcher = DynamicBatcher(answers, max_batch=8, window_s=0.05)
    results = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.predict(image(i / 10), f"r{i}")))
               for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == list(range(6))
    for i, result in results.items():
        assert result.outputs == [{"mean": pytest.approx(i / 10), "for": f"r{i}"}]
    assert sorted(rid for call in calls for rid in call) == [f"r{i}" for i in range(6)]
    assert any(len(call) > 1 for call in calls), calls


def test_a_failure_after_the_model_call_reaches_the_batch_and_leaves_the_batcher_working():
    failing = {"on": True}

    def count(images: int, seconds: float) -> None:  # the metrics hook, failing once
        if failing["on"]:
            raise ValueError("metrics broke")

    batcher = DynamicBatcher(RecordingModel(), max_batch=8, window_s=0.05, on_batch=count)
    outcome = run_concurrently(batcher, [0.1, 0.2, 0.3, 0.4])
    assert len(outcome["errors"]) == 4 and all("metrics broke" in str(e) for e in outcome["errors"])
    failing["on"] = False
    results = run_concurrently(batcher, [0.5, 0.6])  # no request was left queued or leading: nothing hangs
    assert sorted(results) == [0.5, 0.6] and results[0.6].outputs[0, 0] == pytest.approx(0.6)
