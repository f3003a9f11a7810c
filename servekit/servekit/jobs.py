"""Background training jobs: one at a time per service, with live progress.

A job trains one or more models in turn. Its status (queued, running,
succeeded, failed, cancelled), the current model's epoch and step, and each
model's history are readable at any time; finished jobs stay readable. A
cancelled job stops at its next training step and writes nothing.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable

from .backend import EpochRecord
from .errors import Conflict, NotFound

log = logging.getLogger(__name__)

MAX_KEPT_JOBS = 200
FINISHED = ("succeeded", "failed", "cancelled")
_RUNNERS: weakref.WeakSet = weakref.WeakSet()  # every JobRunner of this process, for stop_all_jobs


def finite_or_none(value: float) -> float | None:
    """The value as a float, or None when it is NaN or infinite (which JSON cannot carry)."""
    value = float(value)
    return value if math.isfinite(value) else None


class JobCancelled(BaseException):
    """Raised inside the training loop when the job was cancelled.

    A BaseException, so that the per-model ``except Exception`` that lets the
    next model train after a failure does not swallow a cancellation.
    """


class TrainingJob:
    """The status of one training job; also the ``Progress`` its backends report to."""

    def __init__(self, models: list[str], epochs: int, config: dict):
        self.job_id = uuid.uuid4().hex[:12]
        self.models = list(models)
        self.epochs = epochs
        self.config = config
        self.status = "queued"
        self.model: str | None = self.models[0] if self.models else None
        self.epoch = 0
        self.step = 0
        self.steps_per_epoch = 0
        self.loss: float | None = None
        self.accuracy: float | None = None
        self.error: str | None = None
        self.created_at = time.time()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.results: dict[str, dict] = {m: {"status": "queued", "history": []} for m in self.models}
        self.cancel_requested = False
        self.cancel_reason = "cancelled on request"
        self._lock = threading.Lock()

    def cancel(self, reason: str = "cancelled on request") -> None:
        """Ask the job to stop at its next step, saying why (a no-op once it has finished)."""
        self.cancel_reason = reason
        self.cancel_requested = True

    def check_cancelled(self) -> None:
        """Raise JobCancelled if the job was asked to stop."""
        if self.cancel_requested:
            raise JobCancelled()

    # Progress interface, called from the training thread.
    def begin_model(self, model: str) -> None:
        with self._lock:
            self.model, self.epoch, self.step, self.steps_per_epoch = model, 0, 0, 0
            self.results[model]["status"] = "running"
            self.results[model]["started_at"] = time.time()

    def begin_epoch(self, epoch: int, steps_per_epoch: int) -> None:
        with self._lock:
            self.epoch, self.step, self.steps_per_epoch = epoch, 0, steps_per_epoch

    def step_done(self, step: int, loss: float, accuracy: float) -> None:
        with self._lock:
            self.step, self.loss, self.accuracy = step, finite_or_none(loss), finite_or_none(accuracy)

    def end_epoch(self, record: EpochRecord) -> None:
        with self._lock:
            entry = {key: finite_or_none(value) if isinstance(value, float) else value
                     for key, value in record.to_dict().items()}  # a diverged epoch shows null, not NaN
            self.results[self.model]["history"].append(entry)
            self.step = self.steps_per_epoch

    def end_model(self, model: str, outcome: dict) -> None:
        with self._lock:
            self.results[model].update(outcome)
            self.results[model]["finished_at"] = time.time()

    def to_dict(self) -> dict:
        """The contract's job status, plus every model's own status and results."""
        with self._lock:
            current = self.results.get(self.model, {}) if self.model else {}
            return {
                "job_id": self.job_id,
                "model": self.model,
                "models": self.models,
                "status": self.status,
                "epoch": self.epoch,
                "epochs": self.epochs,
                "step": self.step,
                "steps_per_epoch": self.steps_per_epoch,
                "loss": self.loss,
                "accuracy": self.accuracy,
                "history": list(current.get("history", [])),
                "results": {m: dict(r, history=list(r["history"])) for m, r in self.results.items()},
                "config": self.config,
                "error": self.error,
                "created_at": self.created_at,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
            }


class _ProgressAdapter:
    """Presents a TrainingJob as the backend-facing ``Progress`` protocol."""

    def __init__(self, job: TrainingJob):
        self._job = job

    def begin_epoch(self, epoch: int, steps_per_epoch: int) -> None:
        self._job.begin_epoch(epoch, steps_per_epoch)

    def step(self, step: int, loss: float, accuracy: float) -> None:
        self._job.step_done(step, loss, accuracy)
        self._job.check_cancelled()  # every backend reports each step: where a cancel takes effect

    def end_epoch(self, record: EpochRecord) -> None:
        self._job.end_epoch(record)


def progress_of(job: TrainingJob) -> _ProgressAdapter:
    """The ``Progress`` object to hand to a backend training for ``job``."""
    return _ProgressAdapter(job)


class JobRunner:
    """Runs one job at a time in a background thread and remembers finished jobs."""

    def __init__(self):
        self._jobs: OrderedDict[str, TrainingJob] = OrderedDict()
        self._lock = threading.Lock()
        self._active: TrainingJob | None = None
        self._thread: threading.Thread | None = None
        _RUNNERS.add(self)

    def submit(self, job: TrainingJob, work: Callable[[TrainingJob], None]) -> dict:
        """Start ``work(job)`` in the background and return the job's status as accepted.

        Raises Conflict (409) if a job is already queued or running.
        """
        with self._lock:
            if self._active is not None:
                raise Conflict(
                    f"training job {self._active.job_id} is still {self._active.status}; "
                    f"wait for it (GET /train/{self._active.job_id}) and try again"
                )
            self._active = job
            self._jobs[job.job_id] = job
            while len(self._jobs) > MAX_KEPT_JOBS:
                self._jobs.popitem(last=False)
        accepted = job.to_dict()
        # A daemon: a stopping process cancels the job (stop_all_jobs) but never waits for it beyond a bound.
        self._thread = threading.Thread(target=self._run, args=(job, work), name=f"train-{job.job_id}", daemon=True)
        self._thread.start()
        return accepted

    def get(self, job_id: str) -> TrainingJob:
        """The job with this id; NotFound (404) if unknown."""
        job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no training job {job_id!r}; POST /train starts one")
        return job

    def cancel(self, job_id: str) -> TrainingJob:
        """Ask a job to stop; Conflict (409) when it has already finished."""
        job = self.get(job_id)
        if job.status in FINISHED:
            raise Conflict(f"training job {job_id} has already {job.status}")
        job.cancel()
        return job

    def stop(self, reason: str, timeout_s: float) -> TrainingJob | None:
        """Cancel the active job with ``reason`` and wait up to ``timeout_s`` for it to end (it stops at its next
        step and writes nothing); the job, or None when there was none."""
        job, thread = self._active, self._thread
        if job is None:
            return None
        job.cancel(reason)
        if thread is not None:
            thread.join(timeout_s)
        return job

    def active(self) -> TrainingJob | None:
        """The queued or running job, if any."""
        return self._active

    def jobs(self) -> list[TrainingJob]:
        """All remembered jobs, oldest first."""
        return list(self._jobs.values())

    def _run(self, job: TrainingJob, work: Callable[[TrainingJob], None]) -> None:
        job.status, job.started_at = "running", time.time()
        try:
            job.check_cancelled()
            work(job)
            job.status = "succeeded"
        except JobCancelled:
            log.info("training job %s cancelled", job.job_id)
            job.error, job.status = job.cancel_reason, "cancelled"
            for result in job.results.values():
                if result["status"] in ("queued", "running"):
                    result["status"] = "cancelled"
        except Exception as exc:  # a failed job reports why; the service keeps running
            log.exception("training job %s failed", job.job_id)
            job.error, job.status = f"{type(exc).__name__}: {exc}", "failed"
        finally:
            job.finished_at = time.time()
            with self._lock:
                self._active = None


def stop_all_jobs(reason: str, timeout_s: float) -> list[TrainingJob]:
    """Cancel every active job of this process (it is stopping) and wait up to ``timeout_s`` in all for them."""
    deadline = time.monotonic() + timeout_s
    stopped = []
    for runner in list(_RUNNERS):
        job = runner.stop(reason, max(0.0, deadline - time.monotonic()))
        if job is not None:
            stopped.append(job)
    return stopped
