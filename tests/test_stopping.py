"""SIGTERM stops the gateway and a framework service within 5 s, with a training running and predictions
arriving: no process left, the run recorded as cancelled, no version written."""

from __future__ import annotations

import signal
import time

import pytest
import requests

from tests.conftest import start_gateway, start_service
from tests.stopping import (
    AUTH,
    STOP_LIMIT_S,
    PredictionStream,
    process_tree,
    seconds_until_gone,
    stored_run,
    versions_on_disk,
    wait_for_training,
)

TRAINING = {"epochs": 3, "train_limit": 20000}


def test_sigterm_stops_the_gateway_and_cancels_its_run(tmp_path):
    service = start_service("torch", tmp_path / "torch")
    gateway = start_gateway({"torch": service.url}, tmp_path / "gateway")
    try:
        started = requests.post(gateway.url + "/train", json={"models": ["torch"], **TRAINING}, headers=AUTH,
                                timeout=30)
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        with PredictionStream(gateway.url + "/predict"):
            job_id = wait_for_training(gateway.url, run_id)["models"]["torch"]["job_id"]
            tree = process_tree(gateway.process.pid)
            gateway.process.send_signal(signal.SIGTERM)
            seconds, left = seconds_until_gone(tree)
        assert not left and seconds < STOP_LIMIT_S, (seconds, left, gateway.log_tail())
        run = stored_run(tmp_path / "gateway", run_id)
        assert run["status"] == "cancelled" and "gateway stopped" in run["error"], run
        assert run["models"]["torch"]["status"] == "cancelled"
        # The gateway cancelled the job on its trainer on the way out: no version is written after the run ended.
        deadline = time.monotonic() + 30
        while (job := requests.get(f"{service.url}/train/{job_id}", timeout=10).json())["status"] == "running":
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["status"] == "cancelled", job
        assert versions_on_disk(tmp_path / "torch" / "torch") == []
    finally:
        gateway.stop()
        service.stop()


@pytest.mark.parametrize("name", ["torch", "keras"])
def test_sigterm_stops_a_training_service_and_writes_no_version(tmp_path, name):
    service = start_service(name, tmp_path / name)
    try:
        accepted = requests.post(service.url + "/train", json=TRAINING, headers=AUTH, timeout=30)
        assert accepted.status_code == 202, accepted.text
        status_url = service.url + accepted.json()["status_url"]
        with PredictionStream(service.url + "/predict"):
            deadline = time.monotonic() + 180
            while (job := requests.get(status_url, timeout=10).json())["step"] == 0:
                assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
                time.sleep(0.2)
            tree = process_tree(service.process.pid)
            assert len(tree) == 2  # the gunicorn master and its worker
            service.process.send_signal(signal.SIGTERM)
            seconds, left = seconds_until_gone(tree)
        assert not left and seconds < STOP_LIMIT_S, (seconds, left, service.log_tail())
        assert "cancelled: the service stopped" in service.log_path.read_text()
        assert not [v for model in (tmp_path / name).iterdir() if model.is_dir()
                    for v in versions_on_disk(model)]
    finally:
        service.stop()
