import threading
import time

import pytest

from servekit.backend import EpochRecord
from servekit.errors import Conflict, NotFound
from servekit.jobs import JobRunner, TrainingJob, progress_of, stop_all_jobs


def wait_done(runner, job_id, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = runner.get(job_id).to_dict()
        if status["status"] in ("succeeded", "failed"):
            return status
        time.sleep(0.01)
    raise TimeoutError


def test_job_reports_progress_and_history():
    runner = JobRunner()
    release = threading.Event()

    def work(job):
        job.begin_model("a")
        progress = progress_of(job)
        progress.begin_epoch(1, 10)
        progress.step(3, 0.9, 0.5)
        release.wait(5)
        progress.end_epoch(EpochRecord(1, 0.8, 0.6, 0.7, 0.65, 1.0))
        job.end_model("a", {"status": "succeeded"})

    accepted = runner.submit(TrainingJob(["a"], 1, {}), work)
    assert accepted["status"] == "queued"
    deadline = time.monotonic() + 5
    while runner.get(accepted["job_id"]).to_dict()["step"] != 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    running = runner.get(accepted["job_id"]).to_dict()
    assert running["status"] == "running"
    assert (running["epoch"], running["step"], running["steps_per_epoch"]) == (1, 3, 10)
    assert running["loss"] == 0.9
    release.set()
    done = wait_done(runner, accepted["job_id"])
    assert done["status"] == "succeeded"
    assert done["history"] == [
        {"epoch": 1, "loss": 0.8, "accuracy": 0.6, "val_loss": 0.7, "val_accuracy": 0.65, "seconds": 1.0}
    ]
    assert done["results"]["a"]["status"] == "succeeded"


def test_second_job_while_one_runs_is_conflict_then_allowed():
    runner = JobRunner()
    release = threading.Event()
    first = runner.submit(TrainingJob(["a"], 1, {}), lambda job: release.wait(5))
    with pytest.raises(Conflict, match=first["job_id"]):
        runner.submit(TrainingJob(["a"], 1, {}), lambda job: None)
    release.set()
    wait_done(runner, first["job_id"])
    second = runner.submit(TrainingJob(["a"], 1, {}), lambda job: None)
    assert wait_done(runner, second["job_id"])["status"] == "succeeded"
    assert [j.job_id for j in runner.jobs()] == [first["job_id"], second["job_id"]]


def test_failing_job_reports_error_and_frees_the_runner():
    runner = JobRunner()

    def explode(job):
        raise ValueError("out of memory, say")

    job = runner.submit(TrainingJob(["a"], 1, {}), explode)
    status = wait_done(runner, job["job_id"])
    assert status["status"] == "failed"
    assert "out of memory" in status["error"]
    assert runner.active() is None


def test_unknown_job_is_not_found():
    with pytest.raises(NotFound):
        JobRunner().get("nope")


def test_stop_all_jobs_cancels_the_running_job_with_its_reason():
    runner = JobRunner()
    wrote = []

    def work(job):
        progress = progress_of(job)
        for step in range(10_000):
            progress.step(step, 0.5, 0.5)  # where a cancel takes effect
            time.sleep(0.01)
        wrote.append("version")

    accepted = runner.submit(TrainingJob(["a"], 1, {}), work)
    while runner.get(accepted["job_id"]).to_dict()["step"] < 2:
        time.sleep(0.01)
    stopped = stop_all_jobs("cancelled: the service stopped", timeout_s=5)
    assert [job.job_id for job in stopped] == [accepted["job_id"]]
    status = runner.get(accepted["job_id"]).to_dict()
    assert status["status"] == "cancelled" and status["error"] == "cancelled: the service stopped"
    assert wrote == [] and runner.active() is None
    assert stop_all_jobs("again", timeout_s=1) == []  # nothing left to stop
