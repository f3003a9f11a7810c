"""The gateway in front of replicas: a torch trainer and two torch servers over one repository, for real.

Requests are spread over both replicas, a roll-out is seen converging in /services, versions and
promotion work through the gateway, and no request is lost while a replica stops under load.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from servekit.testing import authorized, wait_healthy

API = authorized()  # state-changing calls carry the token of the processes the tests start

PIXELS = [[0.0] * 28 for _ in range(28)]


@pytest.fixture(scope="module")
def replicated(tmp_path_factory, role_factory, gateway_factory):
    """Gateway -> torch servers A and B (SERVICE_URLS names both) and the torch trainer (TRAINER_URLS)."""
    repository = tmp_path_factory.mktemp("replicas") / "repository"
    trainer = role_factory("torch", repository, "trainer")
    servers = [role_factory("torch", repository, "server") for _ in range(2)]
    gateway = gateway_factory(
        {}, tmp_path_factory.mktemp("gateway-replicas"),
        SERVICE_URLS=",".join(f"torch={s.url}" for s in servers), TRAINER_URLS=f"torch={trainer.url}",
    )
    yield gateway, trainer, servers
    for process in (gateway, trainer, *servers):
        process.stop()


def replica_versions(gateway) -> dict:
    torch = requests.get(gateway.url + "/services", timeout=30).json()["services"][0]
    return {r["url"]: r.get("model_versions", {}).get("torch") for r in torch["replicas"]}


def test_services_lists_every_replica_and_the_trainer(replicated):
    gateway, trainer, servers = replicated
    torch = requests.get(gateway.url + "/services", timeout=30).json()["services"][0]
    assert sorted(r["url"] for r in torch["replicas"]) == sorted(s.url for s in servers)
    assert all(r["up"] and r["role"] == "server" for r in torch["replicas"])
    assert torch["trainer"]["url"] == trainer.url and torch["trainer"]["role"] == "trainer"


def test_a_run_through_the_gateway_trains_on_the_trainer_and_every_replica_converges(replicated):
    gateway, _, servers = replicated
    accepted = API.post(gateway.url + "/train", json={"epochs": 1, "train_limit": 2000}, timeout=30)
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 600
    while (run := requests.get(gateway.url + accepted.json()["status_url"], timeout=30).json())["status"] in (
            "queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert run["status"] == "succeeded", run
    assert run["models"]["torch"]["version"] == 1 and run["models"]["torch"]["promoted"] is True
    deadline = time.monotonic() + 60
    while set(replica_versions(gateway).values()) != {1}:
        assert time.monotonic() < deadline, replica_versions(gateway)
        time.sleep(0.2)
    meta = requests.get(gateway.url + "/models/torch/versions", timeout=30).json()["versions"][0]
    assert meta["run_id"] == run["run_id"]  # the version records the run that made it


def test_predictions_are_spread_over_both_replicas(replicated):
    gateway, _, servers = replicated
    served_by = []
    for _ in range(20):
        entry = API.post(gateway.url + "/predict", json={"pixels": PIXELS}, timeout=30).json()["predictions"][0]
        assert entry["model_version"] == 1
        served_by.append(entry["served_by"])
    assert {s.split(":")[-1] for s in served_by} == {str(s.port) for s in servers}
    assert min(served_by.count(s) for s in set(served_by)) >= 5  # per request, not pinned by keep-alive


def test_rollback_through_the_gateway(replicated):
    gateway, _, _ = replicated
    accepted = API.post(gateway.url + "/train", json={"epochs": 1, "train_limit": 64, "promote": "never"},
                             timeout=30).json()
    deadline = time.monotonic() + 600
    while requests.get(gateway.url + accepted["status_url"], timeout=30).json()["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    listing = requests.get(gateway.url + "/models/torch/versions", timeout=30).json()
    assert listing["promoted"] == 1 and [v["version"] for v in listing["versions"]] == [2, 1]
    promoted = API.post(gateway.url + "/models/torch/versions/2/promote", json={}, timeout=30)
    assert promoted.status_code == 200 and promoted.json()["version"] == 2
    deadline = time.monotonic() + 60
    while set(replica_versions(gateway).values()) != {2}:
        assert time.monotonic() < deadline, replica_versions(gateway)
        time.sleep(0.2)
    assert API.post(gateway.url + "/models/torch/versions/1/promote", json={}, timeout=30).json()["previous"] == 2
    assert API.post(gateway.url + "/models/torch/versions/42/promote", json={}, timeout=30).status_code == 404
    assert requests.get(gateway.url + "/models/nope/versions", timeout=30).status_code == 404


def test_no_request_is_lost_when_a_replica_stops_under_load(replicated):
    gateway, _, servers = replicated

    def predict(_):
        response = API.post(gateway.url + "/predict", json={"pixels": PIXELS}, timeout=30)
        entry = response.json()["predictions"][0] if response.ok else {"error": response.text}
        return entry.get("served_by") or f"error: {entry.get('error')}"

    with ThreadPoolExecutor(8) as pool:
        first = pool.map(predict, range(200))
        servers[1].stop()  # SIGTERM while requests are in flight
        second = list(pool.map(predict, range(200)))
    answers = list(first) + second
    errors = [a for a in answers if a.startswith("error")]
    assert errors == [], errors[:5]
    assert all(a.endswith(f":{servers[0].port}") for a in second[-50:])  # the stopped one was taken out
    servers[1].start()
    wait_healthy(servers[1].url + "/health", 60)
    deadline = time.monotonic() + 30
    while {predict(i).split(":")[-1] for i in range(10)} != {str(s.port) for s in servers}:
        assert time.monotonic() < deadline, "the restarted replica never got requests again"
        time.sleep(0.5)
