"""scripts/bench, for real: a trained torch service on loopback loaded by the bench as a subprocess (wrk, and the
Python client), the load generator's ceiling against a trivial endpoint, and TorchServe on the same weights."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from servekit.testing import authorized, png_bytes, wait_for_job

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "scripts" / "bench"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUICK = ["--seconds", "1", "--warmup", "0.3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, role_factory):
    """A torch service (ROLE=all) trained on a few hundred images; its repository and its label for digit 0."""
    repository = tmp_path_factory.mktemp("bench") / "repository"
    service = role_factory("torch", repository, "all")
    try:
        response = authorized().post(service.url + "/train", timeout=30,
                                     json={"model": "torch", "epochs": 1, "train_limit": 500})
        assert response.status_code == 202, response.text
        job = wait_for_job(service.url + response.json()["status_url"], timeout=600)
        assert job["status"] == "succeeded", job
        service.repository = repository
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def digit_label(trained, digits) -> int:
    """What the trained torch service answers for MNIST test digit 0 (the bench sends the same image)."""
    response = requests.post(trained.url + "/predict?model=torch", timeout=30,
                             files={"image": ("d.png", png_bytes(digits[0][0]), "image/png")})
    assert response.ok, response.text
    return response.json()["predictions"][0]["label"]


def run_bench(out: Path, *args: str, timeout: float = 600) -> dict:
    """scripts/bench as users run it; its JSON document."""
    env = {**os.environ, "MNIST_DIR": os.environ.get("MNIST_DIR", str(ROOT.parent / "shared" / "data" / "mnist"))}
    done = subprocess.run([sys.executable, str(BENCH), *args, "--out", str(out)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-6000:]}"
    assert "p50 ms" in done.stdout  # the table
    return json.loads(out.read_text())


def check_results(document: dict, endpoints: list[str], levels: list[int]) -> None:
    rows = {(r["endpoint"], r["concurrency"]): r for r in document["results"]}
    assert set(rows) == {(e, c) for e in endpoints for c in levels}
    for key, row in rows.items():
        assert row["requests"] > 0, key
        assert row["errors"] == 0, (key, row["error_kinds"])
        assert row["rps"] > 0, key
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"], (key, row)
        assert row["cpu_ms_per_request"] > 0, key
        assert row["client_cpu_ms_per_request"] > 0, key


@pytest.mark.parametrize("client", ["wrk", "python"])
def test_bench_loads_a_running_service(trained, digit_label, tmp_path, client):
    out = tmp_path / "results.json"
    url = trained.url + "/predict?model=torch"
    document = run_bench(out, f"torch={url}", *QUICK, "--concurrency", "1", "2", "--client", client)

    check_results(document, ["torch"], [1, 2])
    assert document["meta"]["client"]["kind"] == client
    assert document["meta"]["request"]["mnist_test_index"] == 0
    (endpoint,) = document["endpoints"]
    assert endpoint["url"] == url
    assert endpoint["probe"]["label"] == digit_label
    # CPU was measured on the processes listening on the service's port: the gunicorn master and its worker.
    pids = {p["pid"] for p in endpoint["server_processes"]["processes"]}
    assert trained.process.pid in pids and len(pids) >= 2
    assert out.with_suffix(".png").read_bytes().startswith(PNG_MAGIC)


def test_server_pid_names_the_processes(trained, tmp_path):
    chart = tmp_path / "chart.png"
    document = run_bench(tmp_path / "r.json", trained.url + "/predict?model=torch", *QUICK, "--concurrency", "1",
                         "--server-pid", str(trained.process.pid), "--chart", str(chart))
    (endpoint,) = document["endpoints"]
    assert endpoint["server_processes"]["found_by"] == "--server-pid"
    assert trained.process.pid in {p["pid"] for p in endpoint["server_processes"]["processes"]}
    assert document["results"][0]["cpu_ms_per_request"] > 0
    assert chart.read_bytes().startswith(PNG_MAGIC)


@pytest.mark.parametrize("client", ["wrk", "python"])
def test_load_generator_is_far_faster_than_the_servers(tmp_path, client):
    """Against a trivial endpoint the generator itself must reach well above 1,500 requests/s on this box."""
    document = run_bench(tmp_path / "calibration.json", "--calibrate", *QUICK, "--concurrency", "8",
                         "--client", client)
    (row,) = document["results"]
    assert row["endpoint"] == "trivial" and row["errors"] == 0
    assert row["rps"] > 1500, row


def java_available() -> bool:
    can_install = os.geteuid() == 0 and shutil.which("apt-get") is not None
    return shutil.which("java") is not None or can_install


@pytest.mark.skipif(not java_available(), reason="no Java, and apt-get cannot install it here (not root)")
def test_torchserve_peer_serves_the_same_weights(trained, digit_label, tmp_path):
    # A path relative to where the bench runs (the servers it starts run in folders of their own).
    document = run_bench(tmp_path / "peer.json", "--peer", "torchserve", "--model-repository",
                         os.path.relpath(trained.repository, ROOT), "--peer-workers", "2", "--server-workers", "2",
                         *QUICK, "--concurrency", "1", "2", timeout=900)

    check_results(document, ["torch-service", "torchserve"], [1, 2])
    endpoints = {e["name"]: e for e in document["endpoints"]}
    assert endpoints["torchserve"]["workers"] == endpoints["torch-service"]["workers"] == 2  # like for like
    assert endpoints["torchserve"]["threads"]["intra_op"] == endpoints["torch-service"]["threads"]["intra_op"]
    assert endpoints["torchserve"]["model_version"] == endpoints["torch-service"]["model_version"]
    assert endpoints["torchserve"]["probe"]["label"] == endpoints["torch-service"]["probe"]["label"] == digit_label
    # TorchServe's CPU includes its Python backend worker, a child of the Java frontend that listens on the port.
    names = [p["name"] for p in endpoints["torchserve"]["server_processes"]["processes"]]
    assert "java" in names and sum(name.startswith("python") for name in names) >= 2, names
    assert {r["endpoint"] for r in document["ratios"]} == {"torchserve"}
