"""Trainer and server roles over one model repository, for real: one torch trainer and two torch servers
(one with two gunicorn workers) on loopback, sharing a repository folder.

Tests run in file order on one set of processes (module fixture).
"""

from __future__ import annotations

import time

import psutil
import pytest
import requests

from servekit.testing import ServiceProcess, authorized, wait_for_job

API = authorized()  # state-changing calls carry the token of the processes the tests start

POLL_S = 0.5  # MODEL_POLL_S of conftest.start_role
CONVERGE_S = 60.0  # poll + load + warm-up, with a generous margin for a loaded CI machine
GOOD = {"epochs": 1, "train_limit": 3000}
WORSE = {"epochs": 1, "train_limit": 64, "learning_rate": 1e-5}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, role_factory):
    """A trainer and two servers of the torch service over one repository folder."""
    repository = tmp_path_factory.mktemp("roles") / "repository"
    trainer = role_factory("torch", repository, "trainer", KEEP_VERSIONS="3")
    servers = [
        role_factory("torch", repository, "server", TRAINER_URL=trainer.url),
        role_factory("torch", repository, "server", SERVER_WORKERS="2"),
    ]
    yield trainer, servers, repository
    for process in (trainer, *servers):
        process.stop()


def train(trainer: ServiceProcess, **body) -> dict:
    response = API.post(trainer.url + "/train", json={"model": "torch", **body}, timeout=30)
    assert response.status_code == 202, response.text
    job = wait_for_job(trainer.url + response.json()["status_url"], timeout=600)
    assert job["status"] == "succeeded", job
    return job["results"]["torch"]


def serving_versions(server: ServiceProcess, samples: int = 8) -> set:
    """The versions that answer predictions (several calls, so that every worker of the server is asked)."""
    pixels = [[0.0] * 28 for _ in range(28)]
    versions = set()
    for _ in range(samples):
        # A connection of its own each: the session's kept-alive one stays with one gunicorn worker, and the
        # other could still be loading the version while every answer says it has converged.
        response = requests.post(server.url + "/predict", json={"pixels": pixels}, headers=API.headers,
                                 timeout=30)
        versions.add(response.json()["predictions"][0]["model_version"] if response.ok else None)
    return versions


def wait_converged(servers: list[ServiceProcess], version: int) -> float:
    """Seconds until every server (every worker) answers with ``version``."""
    started = time.monotonic()
    while time.monotonic() - started < CONVERGE_S:
        if all(serving_versions(s) == {version} for s in servers):
            return time.monotonic() - started
        time.sleep(0.1)
    found = {s.url: serving_versions(s) for s in servers}
    raise AssertionError(f"servers did not converge on version {version} within {CONVERGE_S} s: {found}")


def test_roles_report_themselves(fleet):
    trainer, (one, two), _ = fleet
    assert requests.get(trainer.url + "/health", timeout=10).json()["role"] == "trainer"
    health = requests.get(two.url + "/health", timeout=10).json()
    assert health["role"] == "server" and health["served_by"].endswith(f":{two.port}")
    assert health["threads"]["workers"] == 2 and health["threads"]["intra_op"] == 1  # 2 workers x 1 thread = 2 CPUs
    assert requests.get(one.url + "/health", timeout=10).json()["threads"]["intra_op"] == 2


def listening_processes(port: int) -> set[int]:
    return {c.pid for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_each_worker_of_a_multi_worker_server_listens_on_its_own_socket(fleet):
    _, (one, two), _ = fleet
    # SO_REUSEPORT: the kernel spreads new connections over the workers, instead of whichever woke first taking
    # a burst of keep-alive connections while its sibling idles.
    workers = listening_processes(two.port)
    assert len(workers) == 2, workers
    assert all(psutil.Process(pid).ppid() == two.process.pid for pid in workers)  # both gunicorn workers
    assert len(listening_processes(one.port)) == 1  # one worker: one socket, and a second server fails to bind


def test_a_server_never_trains_and_a_trainer_never_serves(fleet):
    trainer, (one, two), _ = fleet
    refused = API.post(one.url + "/train", json={}, timeout=10)
    assert refused.status_code == 409 and trainer.url in refused.json()["error"]
    assert API.post(two.url + "/train", json={}, timeout=10).status_code == 409
    assert API.post(two.url + "/models/torch/versions/1/promote", json={}, timeout=10).status_code == 409
    predict = API.post(trainer.url + "/predict", json={"pixels": [[0.0] * 28] * 28}, timeout=10)
    assert predict.status_code == 409 and "server" in predict.json()["error"]


def test_nothing_serves_before_the_first_version(fleet):
    _, servers, _ = fleet
    for server in servers:
        assert requests.get(server.url + "/v2/health/ready", timeout=10).status_code == 503
        assert serving_versions(server, 2) == {None}


def test_training_publishes_a_version_that_every_server_serves(fleet):
    trainer, servers, repository = fleet
    result = train(trainer, **GOOD)
    assert result["version"] == 1 and result["promoted"] is True
    assert (repository / "torch" / "1" / "meta.json").is_file()
    seconds = wait_converged(servers, 1)
    print(f"every replica served version 1 {seconds:.2f} s after the job ended (poll {POLL_S} s)")
    for server in servers:
        prediction = API.post(server.url + "/predict", json={"pixels": [[0.0] * 28] * 28},
                                   timeout=30).json()["predictions"][0]
        assert prediction["model_version"] == 1 and prediction["served_by"].endswith(f":{server.port}")
        metadata = requests.get(server.url + "/v2/models/torch", timeout=10).json()
        assert metadata["versions"] == ["1"]
        assert requests.get(server.url + "/models", timeout=10).json()["models"][0]["version"] == 1


def test_if_better_refuses_a_worse_model(fleet):
    trainer, servers, _ = fleet
    result = train(trainer, promote="if_better", **WORSE)
    assert result["version"] == 2 and result["promoted"] is False, result
    assert "not promoted" in result["promotion"]
    time.sleep(POLL_S * 4)
    assert all(serving_versions(s) == {1} for s in servers)
    listing = requests.get(servers[0].url + "/models/torch/versions", timeout=10).json()
    assert listing["promoted"] == 1
    assert [(v["version"], v["promoted"]) for v in listing["versions"]] == [(2, False), (1, True)]
    assert listing["versions"][0]["test_accuracy"] < listing["versions"][1]["test_accuracy"]


def test_promote_always_then_roll_back(fleet):
    trainer, servers, _ = fleet
    result = train(trainer, **WORSE)  # promote defaults to always
    assert result["version"] == 3 and result["promoted"] is True
    wait_converged(servers, 3)
    rollback = API.post(trainer.url + "/models/torch/versions/1/promote", json={}, timeout=30)
    assert rollback.status_code == 200, rollback.text
    assert rollback.json()["version"] == 1 and rollback.json()["previous"] == 3
    seconds = wait_converged(servers, 1)
    print(f"rollback to version 1 served everywhere after {seconds:.2f} s")
    missing = API.post(trainer.url + "/models/torch/versions/99/promote", json={}, timeout=30)
    assert missing.status_code == 404 and "99" in missing.json()["error"]


def test_pruning_keeps_the_promoted_version(fleet):
    trainer, servers, repository = fleet
    for expected in (4, 5):
        assert train(trainer, promote="never", **WORSE)["version"] == expected
    kept = sorted(int(p.name) for p in (repository / "torch").iterdir() if p.name.isdigit())
    assert 1 in kept and 5 in kept and len(kept) <= 4, kept  # KEEP_VERSIONS=3, plus the promoted one
    assert all(serving_versions(s) == {1} for s in servers)


def test_cancel_stops_a_job_and_writes_nothing(fleet):
    trainer, _, repository = fleet
    before = sorted(p.name for p in (repository / "torch").iterdir())
    accepted = API.post(trainer.url + "/train", json={"model": "torch", "epochs": 3}, timeout=30).json()
    deadline = time.monotonic() + 60
    while requests.get(trainer.url + accepted["status_url"], timeout=10).json()["step"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    cancel = API.post(f"{trainer.url}/train/{accepted['job_id']}/cancel", json={}, timeout=10)
    assert cancel.status_code == 202
    job = wait_for_job(trainer.url + accepted["status_url"], timeout=60)
    assert job["status"] == "cancelled" and job["results"]["torch"]["status"] == "cancelled"
    assert sorted(p.name for p in (repository / "torch").iterdir()) == before
    again = API.post(f"{trainer.url}/train/{accepted['job_id']}/cancel", json={}, timeout=10)
    assert again.status_code == 409


def test_a_new_replica_starts_on_the_promoted_version(fleet, role_factory):
    _, _, repository = fleet
    late = role_factory("torch", repository, "server")
    try:
        assert serving_versions(late) == {1}
    finally:
        late.stop()
