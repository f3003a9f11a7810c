#!/usr/bin/env python3
"""Throughput of one torch server with 1 and with 2 gunicorn workers, and how fast replicas follow a promotion.

Trains a small torch version into a fresh repository (a trainer process), then for each worker count starts
a server over it and loads /predict with uploads of a real digit at a fixed concurrency; finally starts two
servers, promotes a new version and times until both serve it. Prints the figures; asserts nothing.

    .venvs/dev/bin/python scripts/bench_workers.py [--seconds 20] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from servekit.mnist import load_mnist  # noqa: E402
from servekit.testing import TEST_TOKEN, ServiceProcess, authorized, png_bytes, wait_for_job  # noqa: E402

MNIST_DIR = Path(os.environ.get("MNIST_DIR", ROOT.parent / "shared" / "data" / "mnist")).resolve()


def start(repository: Path, role: str, **env: str) -> ServiceProcess:
    """A torch service process of the given role over ``repository``."""
    base = {"MNIST_DIR": str(MNIST_DIR), "MODEL_REPOSITORY": str(repository), "ROLE": role, "LOG_LEVEL": "WARNING",
            "INTRA_OP_THREADS": "", "API_TOKEN": TEST_TOKEN, **env}
    process = ServiceProcess(ROOT / "services" / "torch", ROOT / ".venvs" / "torch", base)
    process.log_path = repository.parent / f"{role}-{process.port}.log"
    return process.start()


def load(url: str, image: bytes, seconds: float, concurrency: int) -> tuple[float, float, int]:
    """(requests/s, p50 ms, errors) of multipart /predict uploads with ``concurrency`` keep-alive callers."""
    latencies, failures, lock = [], [], threading.Lock()
    deadline = time.monotonic() + seconds

    def caller():
        session = requests.Session()
        while time.monotonic() < deadline:
            started = time.perf_counter()
            ok = session.post(url + "/predict", files={"image": ("d.png", image, "image/png")}, timeout=30).ok
            with lock:
                (latencies if ok else failures).append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=caller) for _ in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.monotonic() - started), float(np.percentile(latencies, 50)), len(failures)


def train(trainer: ServiceProcess, **body) -> int:
    body = {"model": "torch", "epochs": 1, "train_limit": 3000, **body}
    accepted = authorized().post(trainer.url + "/train", json=body, timeout=30).json()
    return wait_for_job(trainer.url + accepted["status_url"], timeout=600)["results"]["torch"]["version"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    image = png_bytes(load_mnist(MNIST_DIR, mirrors=()).test.images[0])
    with tempfile.TemporaryDirectory() as folder:
        repository = Path(folder) / "repository"
        trainer = start(repository, "trainer")
        try:
            train(trainer)
            for workers in (1, 2):
                server = start(repository, "server", SERVER_WORKERS=str(workers))
                try:
                    load(server.url, image, 3, args.concurrency)  # warm every worker and connection
                    rps, p50, errors = load(server.url, image, args.seconds, args.concurrency)
                    threads = requests.get(server.url + "/health", timeout=10).json()["threads"]
                    print(f"torch server, {workers} worker(s) x {threads['intra_op']} thread(s), concurrency "
                          f"{args.concurrency}: {rps:.0f} req/s, p50 {p50:.2f} ms, {errors} errors", flush=True)
                finally:
                    server.stop()
            servers = [start(repository, "server", MODEL_POLL_S="2") for _ in range(2)]
            try:
                version = train(trainer, promote="never")
                promoted_at = time.monotonic()
                promote = f"{trainer.url}/models/torch/versions/{version}/promote"
                authorized().post(promote, json={}, timeout=30).raise_for_status()
                pending = {s.url for s in servers}
                while pending:
                    for url in list(pending):
                        answer = requests.post(url + "/predict", files={"image": ("d.png", image, "image/png")},
                                               timeout=30).json()
                        if answer["predictions"][0]["model_version"] == version:
                            pending.discard(url)
                    time.sleep(0.02)
                print(f"promotion of version {version} -> both replicas serving it: "
                      f"{time.monotonic() - promoted_at:.2f} s (MODEL_POLL_S=2)")
            finally:
                for server in servers:
                    server.stop()
        finally:
            trainer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
