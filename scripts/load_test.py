#!/usr/bin/env python3
"""Steady load on a /predict endpoint for a fixed time, watching the servers' memory.

    .venvs/dev/bin/python scripts/load_test.py --url http://127.0.0.1:8000/predict \
        --seconds 60 --concurrency 16 --watch-pid 1234 --watch-pid 5678 --out load.json

Every request uploads the same PNG of a real MNIST test digit. Memory (RSS of
each watched process and its children) is read once the warm-up is over and
again at the end; ``memory_growth`` is the relative change of their total.
Prints a summary and writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from servekit.mnist import load_mnist  # noqa: E402
from servekit.testing import png_bytes  # noqa: E402


def resident_bytes(pids: list[int]) -> int:
    """Total RSS of the processes and all their children (gunicorn workers)."""
    total = 0
    for pid in pids:
        try:
            parent = psutil.Process(pid)
            for process in [parent, *parent.children(recursive=True)]:
                total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_load(url: str, body: bytes, seconds: float, concurrency: int, warmup_s: float, pids: list[int],
             token: str | None = None, timeout: float = 30.0) -> dict:
    """``concurrency`` threads posting ``body`` for ``seconds``; latencies after the warm-up, errors throughout."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    started = time.monotonic()
    measure_from, stop_at = started + warmup_s, started + warmup_s + seconds
    latencies, errors, lock = [], Counter(), threading.Lock()
    memory = {}

    def worker() -> None:
        session = requests.Session()
        while (now := time.monotonic()) < stop_at:
            began = time.perf_counter()
            try:
                response = session.post(url, files={"image": ("digit.png", body, "image/png")}, headers=headers,
                                        timeout=timeout)
                error = None if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:100]}"
            except requests.RequestException as exc:
                error = type(exc).__name__
            elapsed_ms = (time.perf_counter() - began) * 1000.0
            with lock:
                if error:
                    errors[error] += 1
                elif now >= measure_from:
                    latencies.append(elapsed_ms)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, measure_from - time.monotonic()))
    memory["start"] = resident_bytes(pids)
    for thread in threads:
        thread.join(seconds + warmup_s + timeout + 5)
    memory["end"] = resident_bytes(pids)
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99]) if latencies else (0.0, 0.0, 0.0)
    return {
        "url": url, "seconds": seconds, "concurrency": concurrency,
        "requests": len(latencies), "errors": sum(errors.values()), "error_kinds": dict(errors),
        "requests_per_s": round(len(latencies) / seconds, 1),
        "latency_ms": {"p50": round(float(p50), 2), "p90": round(float(p90), 2), "p99": round(float(p99), 2)},
        "memory_mb": {k: round(v / 2**20, 1) for k, v in memory.items()},
        "memory_growth": round((memory["end"] - memory["start"]) / memory["start"], 4) if memory["start"] else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000/predict")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before measuring")
    parser.add_argument("--watch-pid", type=int, action="append", default=[], help="a server process to watch")
    parser.add_argument("--token", help="Bearer token, where predictions are protected")
    parser.add_argument("--mnist-dir", default=os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--out", help="write the summary here as JSON")
    args = parser.parse_args()
    digit = load_mnist(Path(args.mnist_dir), mirrors=()).test.images[0]
    result = run_load(args.url, png_bytes(digit), args.seconds, args.concurrency, args.warmup, args.watch_pid,
                      args.token)
    print(f"{result['requests']} requests in {args.seconds:g} s at concurrency {args.concurrency}: "
          f"{result['requests_per_s']} req/s, p50 {result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} "
          f"ms, {result['errors']} errors; memory {result['memory_mb'].get('start')} -> "
          f"{result['memory_mb'].get('end')} MB ({result['memory_growth']:+.1%})")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
