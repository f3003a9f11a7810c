"""What the gateway's report reads from every service: GET /source (the code each model runs), /health's machine
and memory, and each model's peak memory while training; over HTTP, against every service in SERVICES."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from servekit.testing import assert_matches_openapi, authorized, wait_for_job

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
KERAS = ("SequentialBackend.build", "KerasBackend.train")  # every Keras model on Keras' own backend
# model -> (network, training step) as qualname says them: what each service declares
PARTS = {
    "keras-sequential": KERAS,
    "keras-functional": ("FunctionalBackend.build", "KerasBackend.train"),
    "torch": ("ConvNet", "TorchBackend._train"),
    "keras-torch": KERAS,
    "tf-native": ("glorot_uniform, NativeCNN", "TapeBackend.train"),
    "tf-hybrid": ("HybridBackend.build", "TapeBackend.train"),
    "flax": ("max_pool_2x2, conv_3x3, ConvNet", "cross_entropy, train_step"),
    "keras-jax": KERAS,
}


@pytest.fixture(scope="module")
def spec(service):
    return requests.get(service.url + "/openapi.json", timeout=30).json()


def lines_of(file: str, first: int, last: int) -> str:
    """Lines first..last (1-based, inclusive) of a file of the repository, as they are on disk."""
    return "".join((ROOT / file).read_text().splitlines(keepends=True)[first - 1:last])


def test_source_is_the_code_on_disk_of_every_models_network_and_training_step(service, spec):
    response = requests.get(service.url + "/source", timeout=30)
    assert response.status_code == 200
    assert_matches_openapi(spec, "GET", "/source", response)
    body = response.json()
    assert body["service"] == service.name
    assert sorted(body["models"]) == sorted(service.models)
    counted_less = 0
    for model, parts in body["models"].items():
        assert (parts["network"]["qualname"], parts["train_step"]["qualname"]) == PARTS[model]
        for block in (parts["network"], parts["train_step"]):
            assert block["file"] in (f"services/{service.name}/backend.py", "servekit/servekit/keras_models.py")
            assert block["code"] == lines_of(block["file"], block["first_line"], block["last_line"])
            assert block["qualnames"][-1].split(".")[-1] in block["code"]
            # Blank lines, comments and docstrings are not counted: at most the lines the block has, never none.
            assert 5 <= block["lines"] <= block["last_line"] - block["first_line"] + 1
            counted_less += block["lines"] < block["last_line"] - block["first_line"] + 1
    assert counted_less  # every service's training step has a docstring, a comment or a blank line


def test_health_says_where_it_runs_and_what_this_process_holds(service, spec):
    response = requests.get(service.url + "/health", timeout=30)
    assert_matches_openapi(spec, "GET", "/health", response)
    machine, memory = response.json()["machine"], response.json()["memory"]
    assert machine["cpu_count"] == os.cpu_count()  # the tests run the services on this machine
    assert 1 <= machine["cpu_affinity"] <= machine["cpu_count"]
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    assert machine["memory_bytes"] == int(meminfo["MemTotal"].split()[0]) * 1024
    assert machine["cpu_model"] and machine["platform"] and machine["python"].startswith("3.")
    # A process with its framework loaded holds tens of MB at least, and far less than the machine has.
    assert 50 * MIB < memory["rss_bytes"] <= memory["peak_rss_bytes"] < machine["memory_bytes"]
    if service.name == "jax":  # it trains (ROLE=all): XLA's threads share glibc's main heap
        assert response.json()["threads"]["malloc_arena_max"] == 1


def test_training_records_each_models_peak_memory(service, spec):
    api = authorized()
    accepted = api.post(service.url + "/train", json={"epochs": 1, "train_limit": 2000}, timeout=60)
    assert accepted.status_code == 202, accepted.text
    job = wait_for_job(service.url + accepted.json()["status_url"], timeout=600)
    assert job["status"] == "succeeded", job["error"]
    health = requests.get(service.url + "/health", timeout=30).json()
    response = requests.get(service.url + "/models", timeout=30)
    assert_matches_openapi(spec, "GET", "/models", response)
    for entry in response.json()["models"]:
        peak = entry["train_peak_rss_bytes"]
        assert peak == job["results"][entry["name"]]["train_peak_rss_bytes"]
        assert 50 * MIB < peak <= health["memory"]["peak_rss_bytes"] < health["machine"]["memory_bytes"]
        assert entry["train_seconds"] > 0
