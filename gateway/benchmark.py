"""HTTP load on each model's /predict: latency percentiles and throughput at a given concurrency.

Models are measured one after another (never two at once, so that they do not
share the cores), each after a warm-up that is left out of the figures, and
each bounded both in requests and in seconds.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from servekit.tensor_body import TENSOR_MEDIA_TYPE, input_to_tensor

from .clients import ServiceClient, ServiceError
from .pools import DaemonExecutor

MAX_REQUESTS = 5000
MAX_CONCURRENCY = 32
DEFAULT_MAX_SECONDS = 60.0
WARMUP_REQUESTS = 10


def benchmark_pixels() -> list[list[float]]:
    """A fixed MNIST-like input (a ring, like a 0): the cost of a forward pass does not depend on it."""
    rows, cols = np.indices((28, 28))
    radius = np.hypot(rows - 14, cols - 14)
    return np.clip(1.0 - np.abs(radius - 7) / 2, 0, 1).round(3).tolist()


def benchmark_model(
    client: ServiceClient, model: str, requests_count: int, concurrency: int, max_seconds: float,
    timeout: float = 30.0,
) -> dict:
    """Send ``requests_count`` /predict calls with ``concurrency`` in flight; return the figures."""
    # The gateway's own hop: the preprocessed image as raw float32 bytes.
    payload = {"data": input_to_tensor(np.asarray(benchmark_pixels())), "headers": {"Content-Type": TENSOR_MEDIA_TYPE}}
    path = f"/predict?model={model}"
    for _ in range(WARMUP_REQUESTS):  # tracing, first-call allocations, connection set-up
        try:
            client.call("POST", path, timeout, **payload)
        except ServiceError:
            break

    latencies: list[float] = []
    inference: list[float] = []
    errors: dict[str, int] = {}
    replicas: dict[str, int] = {}  # replica address -> requests it answered
    lock = threading.Lock()
    issued = iter(range(requests_count))
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        # The client's pooled keep-alive connections, spread over every replica of the service per request.
        for _ in issued:
            if time.monotonic() > deadline:
                return
            started = time.perf_counter()
            try:
                reply = client.call("POST", path, timeout, **payload)
                elapsed, error = (time.perf_counter() - started) * 1000.0, None
            except ServiceError as exc:
                error = str(exc)
            with lock:
                if error is None:
                    latencies.append(elapsed)
                    inference.append(reply.body["predictions"][0]["inference_ms"])
                    replicas[reply.replica] = replicas.get(reply.replica, 0) + 1
                else:
                    errors[error[:120]] = errors.get(error[:120], 0) + 1

    started = time.perf_counter()
    with DaemonExecutor(max_workers=concurrency) as pool:
        for _ in range(concurrency):
            pool.submit(worker)
    wall = time.perf_counter() - started
    return {**summarize(model, latencies, inference, errors, wall, concurrency), "replicas": replicas}


def summarize(model: str, latencies: list[float], inference: list[float], errors: dict[str, int],
              wall_seconds: float, concurrency: int) -> dict:
    """Percentiles (numpy's linear interpolation) and throughput of one model's load."""
    result = {
        "model": model,
        "concurrency": concurrency,
        "requests": len(latencies) + sum(errors.values()),
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "seconds": round(wall_seconds, 3),
        "throughput_rps": round(len(latencies) / wall_seconds, 2) if wall_seconds > 0 else 0.0,
    }
    if latencies:
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
        result.update(
            latency_ms={"p50": round(p50, 3), "p95": round(p95, 3), "p99": round(p99, 3),
                        "mean": round(float(np.mean(latencies)), 3), "max": round(max(latencies), 3)},
            inference_ms={"p50": round(float(np.percentile(inference, 50)), 3),
                          "p99": round(float(np.percentile(inference, 99)), 3)},
        )
    return result
