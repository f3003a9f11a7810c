"""Load through the gateway while a training run keeps the trainers busy: no errors, no memory growth.

The production topology on loopback: per framework a trainer and a server over one model repository,
and the gateway in front (SERVICE_URLS: the servers, TRAINER_URLS: the trainers). After a tiny first run
every model serves; a second, longer run then trains while ``scripts/load_test.py`` posts PNG uploads to
the gateway's /predict for 60 s at concurrency 16 (after a 10 s warm-up). The servers and the gateway
are watched: their total resident memory may not grow by 10% or more.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from servekit.testing import authorized
from tests.conftest import MNIST_DIR, ROOT, SERVICES

API = authorized()
LOAD_SECONDS, WARMUP_SECONDS, CONCURRENCY = 60, 10, 16


@pytest.fixture(scope="module")
def topology(tmp_path_factory, role_factory, gateway_factory):
    """Trainer + server per framework over one repository each, and the gateway in front of the servers."""
    base = tmp_path_factory.mktemp("load")
    trainers, servers = {}, {}
    for name in SERVICES:
        repository = base / f"repository-{name}"
        trainers[name] = role_factory(name, repository, "trainer")
        servers[name] = role_factory(name, repository, "server")
    gateway = gateway_factory(
        {}, base / "gateway",
        SERVICE_URLS=",".join(f"{n}={s.url}" for n, s in servers.items()),
        TRAINER_URLS=",".join(f"{n}={t.url}" for n, t in trainers.items()),
    )
    yield gateway, trainers, servers
    for process in (gateway, *trainers.values(), *servers.values()):
        process.stop()


def start_run(gateway, **body) -> str:
    response = API.post(gateway.url + "/train", json=body, timeout=30)
    assert response.status_code == 202, response.text
    return response.json()["run_id"]


def run_status(gateway, run_id: str) -> dict:
    return requests.get(f"{gateway.url}/runs/{run_id}", timeout=30).json()


def test_load_during_training_has_no_errors_and_no_memory_growth(topology, tmp_path):
    gateway, trainers, servers = topology
    first = start_run(gateway, epochs=1, train_limit=2000)
    deadline = time.monotonic() + 600
    while run_status(gateway, first)["status"] == "running" and time.monotonic() < deadline:
        time.sleep(1)
    assert run_status(gateway, first)["status"] == "succeeded"
    time.sleep(2)  # MODEL_POLL_S 0.5: the servers load the new versions

    long_run = start_run(gateway, epochs=20, train_limit=30000)  # far longer than the load; cancelled after it
    out = tmp_path / "load.json"
    pids = [gateway.process.pid, *(s.process.pid for s in servers.values())]
    command = [sys.executable, str(ROOT / "scripts" / "load_test.py"), "--url", gateway.url + "/predict",
               "--seconds", str(LOAD_SECONDS), "--warmup", str(WARMUP_SECONDS), "--concurrency", str(CONCURRENCY),
               "--mnist-dir", str(MNIST_DIR), "--out", str(out), *(f"--watch-pid={pid}" for pid in pids)]
    printed = subprocess.run(command, capture_output=True, text=True, timeout=LOAD_SECONDS + WARMUP_SECONDS + 120)
    assert printed.returncode == 0, printed.stderr[-3000:]
    print(printed.stdout)
    status = run_status(gateway, long_run)
    assert status["status"] == "running", "the training run ended before the load did: nothing was overlapped"
    API.post(f"{gateway.url}/runs/{long_run}/cancel", json={}, timeout=30)

    result = json.loads(out.read_text())
    assert result["errors"] == 0, result["error_kinds"]
    assert result["requests"] > CONCURRENCY * 10
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    assert result["memory_growth"] < 0.10, result["memory_mb"]
    Path(ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "load_during_training.json").write_text(json.dumps(result, indent=2))
