"""Runs that end early, over real HTTP: a cancel, a job past its deadline, a store that fails mid-run.

A torch service (ROLE=all) and gateways in front of it; whatever happens, the gateway takes the next run.
"""

from __future__ import annotations

import shutil
import time

import pytest
import requests

from servekit.testing import authorized

API = authorized()
LONG = {"models": ["torch"], "epochs": 3}  # ~50 s of training: long enough to be stopped midway
SHORT = {"models": ["torch"], "epochs": 1, "train_limit": 1000}


@pytest.fixture(scope="module")
def torch_service(tmp_path_factory, role_factory):
    service = role_factory("torch", tmp_path_factory.mktemp("runs") / "repository", "all")
    yield service
    service.stop()


def wait_run(gateway, run_id, until, timeout=120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = requests.get(f"{gateway.url}/runs/{run_id}", timeout=10).json()
        if until(run):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not get there in {timeout} s: {run}")


def test_a_cancelled_run_stops_its_job_and_frees_the_runner(tmp_path, torch_service, gateway_factory):
    gateway = gateway_factory({"torch": torch_service.url}, tmp_path)
    try:
        run_id = API.post(gateway.url + "/train", json=LONG, timeout=30).json()["run_id"]
        wait_run(gateway, run_id, lambda r: (r["models"]["torch"].get("step") or 0) >= 2)
        cancelled = API.post(f"{gateway.url}/runs/{run_id}/cancel", json={}, timeout=30)
        assert cancelled.status_code == 202, cancelled.text
        run = wait_run(gateway, run_id, lambda r: r["status"] not in ("queued", "running"), timeout=60)
        assert run["status"] == "cancelled" and run["models"]["torch"]["status"] == "cancelled"
        job = requests.get(f"{torch_service.url}/train/{run['models']['torch']['job_id']}", timeout=10).json()
        assert job["status"] == "cancelled"
        again = API.post(gateway.url + "/train", json=LONG, timeout=30)
        assert again.status_code == 202  # the runner is free at once
        assert API.delete(f"{gateway.url}/runs/{again.json()['run_id']}", timeout=30).status_code == 202
        wait_run(gateway, again.json()["run_id"], lambda r: r["status"] == "cancelled", timeout=60)
        assert API.post(f"{gateway.url}/runs/{run_id}/cancel", json={}, timeout=30).status_code == 409
    finally:
        gateway.stop()


def test_a_job_past_its_deadline_is_cancelled_and_the_run_fails(tmp_path, torch_service, gateway_factory):
    gateway = gateway_factory({"torch": torch_service.url}, tmp_path, JOB_DEADLINE_S="3")
    try:
        run_id = API.post(gateway.url + "/train", json=LONG, timeout=30).json()["run_id"]
        run = wait_run(gateway, run_id, lambda r: r["status"] not in ("queued", "running"), timeout=60)
        assert run["status"] == "failed" and "JOB_DEADLINE_S" in run["models"]["torch"]["error"]
        job_id = run["models"]["torch"]["job_id"]
        deadline = time.monotonic() + 30
        while requests.get(f"{torch_service.url}/train/{job_id}", timeout=10).json()["status"] != "cancelled":
            assert time.monotonic() < deadline, "the service's job was not cancelled"
            time.sleep(0.2)
    finally:
        gateway.stop()


def test_a_store_failure_during_a_run_does_not_wedge_the_gateway(tmp_path, torch_service, gateway_factory):
    gateway = gateway_factory({"torch": torch_service.url}, tmp_path)
    database = tmp_path / "gateway.sqlite3"
    try:
        run_id = API.post(gateway.url + "/train", json=SHORT, timeout=30).json()["run_id"]
        shutil.move(database, tmp_path / "aside.sqlite3")
        database.mkdir()  # every store call now fails: SQLite cannot open a folder
        time.sleep(1)
        deadline = time.monotonic() + 120
        while requests.get(f"{gateway.url}/runs/{run_id}", timeout=10).status_code == 200:
            assert time.monotonic() < deadline, "the run never ended"  # answered from memory while active
            time.sleep(0.5)
        database.rmdir()
        shutil.move(tmp_path / "aside.sqlite3", database)
        next_run = API.post(gateway.url + "/train", json=SHORT, timeout=30)
        assert next_run.status_code == 202, next_run.text  # not 409 forever
    finally:
        gateway.stop()


def test_a_gateway_killed_mid_run_comes_back_with_the_run_failed_and_takes_new_runs(tmp_path, torch_service,
                                                                                   gateway_factory):
    gateway = gateway_factory({"torch": torch_service.url}, tmp_path)
    try:
        run_id = API.post(gateway.url + "/train", json=LONG, timeout=30).json()["run_id"]
        wait_run(gateway, run_id, lambda r: r["models"]["torch"]["status"] == "running")
        gateway.process.kill()  # SIGKILL: no chance to save anything
        gateway.process.wait()
        gateway.start()
        run = requests.get(f"{gateway.url}/runs/{run_id}", timeout=10).json()
        assert run["status"] == "failed" and "restarted" in run["error"]
        job_id = run["models"]["torch"]["job_id"]
        API.delete(f"{torch_service.url}/train/{job_id}", timeout=10)  # the orphaned job, stopped by hand
        accepted = API.post(gateway.url + "/train", json=SHORT, timeout=30)
        assert accepted.status_code == 202
        done = wait_run(gateway, accepted.json()["run_id"], lambda r: r["status"] not in ("queued", "running"),
                        timeout=300)
        assert done["status"] == "succeeded", done
    finally:
        gateway.stop()


def test_a_run_cancelled_while_waiting_for_a_busy_trainer_never_starts_its_job(tmp_path, torch_service,
                                                                              gateway_factory):
    busy = API.post(torch_service.url + "/train", json={"model": "torch", "epochs": 3}, timeout=30).json()
    gateway = gateway_factory({"torch": torch_service.url}, tmp_path)
    try:
        run_id = API.post(gateway.url + "/train", json=SHORT, timeout=30).json()["run_id"]
        wait_run(gateway, run_id, lambda r: r["models"]["torch"]["status"] == "waiting")
        assert API.post(f"{gateway.url}/runs/{run_id}/cancel", json={}, timeout=30).status_code == 202
        run = wait_run(gateway, run_id, lambda r: r["status"] not in ("queued", "running"), timeout=30)
        assert run["status"] == "cancelled" and run["models"]["torch"]["status"] == "cancelled"
        assert "job_id" not in run["models"]["torch"]
    finally:
        API.delete(f"{torch_service.url}/train/{busy['job_id']}", timeout=10)
        gateway.stop()
