#!/usr/bin/env python3
"""Full default training of every model through the services' HTTP API, and the figures it gives.

For each service (one at a time, so that models do not share the cores): POST
/train with the defaults (5 epochs, all 54,000 training images), follow the job
with a progress bar, then time /predict at concurrency 1. Prints per model: the
first and steady-state seconds per epoch, validation and test accuracy,
inference_ms p50 and the HTTP /predict p50.

    .venvs/dev/bin/python scripts/measure_training.py [--services keras=http://127.0.0.1:8001,...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import requests
from tqdm import tqdm

DEFAULT_SERVICES = "keras=http://127.0.0.1:8001,torch=http://127.0.0.1:8002,tf=http://127.0.0.1:8003"


def parse_services(text: str) -> dict[str, str]:
    """'name=url,name=url' -> {name: url}."""
    return dict(item.split("=", 1) for item in text.split(",") if item)


def train(url: str, body: dict) -> dict:
    """Start a job and follow it with a progress bar per model; return its final status."""
    response = requests.post(f"{url}/train", json=body, timeout=30)
    response.raise_for_status()
    status_url = url + response.json()["status_url"]
    bars: dict[str, tqdm] = {}
    while True:
        status = requests.get(status_url, timeout=30).json()
        model = status["model"]
        if model and status["steps_per_epoch"]:
            total = status["epochs"] * status["steps_per_epoch"]
            bar = bars.setdefault(model, tqdm(total=total, desc=model, unit="step", file=sys.stderr))
            bar.n = (status["epoch"] - 1) * status["steps_per_epoch"] + status["step"]
            bar.set_postfix(epoch=status["epoch"], loss=f"{status['loss'] or 0:.4f}")
            bar.refresh()
        if status["status"] in ("succeeded", "failed"):
            for bar in bars.values():
                bar.close()
            return status
        time.sleep(1.0)


def predict_latency(url: str, model: str, requests_count: int) -> tuple[float, float]:
    """p50 of the HTTP round trip and of inference_ms for /predict?model= at concurrency 1."""
    rng = np.random.default_rng(0)
    session = requests.Session()
    round_trips, inference = [], []
    for _ in range(requests_count):
        pixels = rng.random((28, 28)).round(3).tolist()
        started = time.perf_counter()
        response = session.post(f"{url}/predict", params={"model": model}, json={"pixels": pixels}, timeout=30)
        round_trips.append((time.perf_counter() - started) * 1000)
        inference.append(response.json()["predictions"][0]["inference_ms"])
    return statistics.median(round_trips), statistics.median(inference)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", default=DEFAULT_SERVICES)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--requests", type=int, default=200, help="/predict calls per model for the latency")
    args = parser.parse_args()
    body = {"epochs": args.epochs}
    if args.train_limit:
        body["train_limit"] = args.train_limit

    rows = []
    for name, url in parse_services(args.services).items():
        health = requests.get(f"{url}/health", timeout=10).json()
        status = train(url, body)
        if status["status"] != "succeeded":
            print(f"{name}: training failed: {status['error']}", file=sys.stderr)
            return 1
        for model, result in status["results"].items():
            seconds = [epoch["seconds"] for epoch in result["history"]]
            http_p50, inference_p50 = predict_latency(url, model, args.requests)
            rows.append({
                "model": model,
                "framework": f"{health['framework']} {health['framework_version']}",
                "threads": health["threads"]["intra_op"],
                "first_epoch_s": seconds[0],
                "steady_epoch_s": statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0],
                "val_accuracy": result["history"][-1]["val_accuracy"],
                "test_accuracy": result["test_accuracy"],
                "inference_ms_p50": inference_p50,
                "predict_http_ms_p50": http_p50,
            })

    header = (f"{'model':18} {'framework':18} {'thr':>3} {'epoch1 s':>9} {'steady s':>9} "
              f"{'val acc':>8} {'test acc':>9} {'infer ms':>9} {'HTTP ms':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:18} {r['framework']:18} {r['threads']:>3} {r['first_epoch_s']:>9.1f} "
              f"{r['steady_epoch_s']:>9.1f} {r['val_accuracy']:>8.4f} {r['test_accuracy']:>9.4f} "
              f"{r['inference_ms_p50']:>9.3f} {r['predict_http_ms_p50']:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
