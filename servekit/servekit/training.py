"""The trainer role: training jobs that write new versions to the repository and apply the promotion policy.

A job trains a *fresh* backend instance (the serving one keeps answering),
evaluates it on the test split, writes it as a new version, and promotes it
or not: ``always``, ``if_better`` (its test accuracy is at least the promoted
version's) or ``never``. Servers pick promoted versions up from the repository.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

from .backend import TrainConfig
from .jobs import JobCancelled, JobRunner, TrainingJob, progress_of
from .memory import peak_rss_during
from .mnist import to_model_input
from .models import ServedModel
from .service import ModelService

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss stopped being a number: such a model is not written, and its job reports why."""


class Trainer:
    """Runs one training job at a time and publishes what it trains as repository versions."""

    def __init__(self, service: ModelService, on_promoted: Callable[[], object] | None = None):
        self.service = service
        self.repository = service.repository
        self.jobs = JobRunner()
        self.on_promoted = on_promoted or (lambda: None)

    def start_training(self, name: str | None, config: TrainConfig, promote: str = "always",
                       run_id: str | None = None) -> dict:
        """Queue a job training the named model (or every model, in turn); returns its status."""
        selected = self.service.select(name)
        self.service.require_data()
        job = TrainingJob([m.name for m in selected], config.epochs, {**config.to_dict(), "promote": promote})
        return self.jobs.submit(job, lambda j: self._train_all(j, selected, config, promote, run_id))

    def promote(self, name: str, version: int) -> dict:
        """Serve ``version`` of the model from now on (also a rollback); returns the new pointer."""
        served = self.service.select(name)[0]
        pointer = self.repository.promote(served.name, version)
        log.info("promoted %s version %s (previous %s)", served.name, version, pointer.get("previous"))
        self.on_promoted()
        return {"model": served.name, **pointer}

    def _train_all(self, job: TrainingJob, selected: list[ServedModel], config: TrainConfig, promote: str,
                   run_id: str | None) -> None:
        failures = []
        for served in selected:
            try:
                self._train_one(job, served, config, promote, run_id)
            except JobCancelled:
                raise
            except Exception as exc:  # the next model still trains; the job reports every failure
                log.exception("training %s failed", served.name)
                failures.append(f"{served.name}: {type(exc).__name__}: {exc}")
                job.end_model(served.name, {"status": "failed", "error": str(exc)})
        if failures:
            raise RuntimeError("; ".join(failures))

    def _train_one(self, job: TrainingJob, served: ServedModel, config: TrainConfig, promote: str,
                   run_id: str | None) -> None:
        data = self.service.require_data()
        info = self.service.info
        job.check_cancelled()
        job.begin_model(served.name)
        candidate = served.backend_class()  # a fresh network; the served one keeps answering
        training_data = self.service.training_data(config.train_limit)
        started = time.perf_counter()
        with peak_rss_during() as peak:
            history = candidate.train(training_data, config, progress_of(job))
        train_seconds = time.perf_counter() - started
        test = candidate.evaluate(to_model_input(data.test.images), data.test.labels)
        job.check_cancelled()  # a cancel during the evaluation still writes nothing
        losses = [record.loss for record in history] + [record.val_loss for record in history] + [test.loss]
        if not all(math.isfinite(loss) for loss in losses):
            raise TrainingDiverged(f"training diverged (the loss became NaN or infinite) at learning_rate "
                                   f"{config.learning_rate}; nothing was saved: lower it")
        finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        meta = {
            "model": served.name,
            "framework": info.framework,
            "framework_version": info.version,
            "framework_versions": {info.framework: info.version, **info.versions},
            "trained_at": finished_at,
            "created_at": finished_at,
            "run_id": run_id,
            "job_id": job.job_id,
            "config": config.to_dict(),
            "promote": promote,  # "never": not served even where no version was promoted yet
            "train_samples": len(training_data.train),
            "history": [record.to_dict() for record in history],
            "train_seconds": round(train_seconds, 3),
            "train_peak_rss_bytes": peak.bytes,  # the whole process's, while train() ran
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "data_sha256": data.sha256,
            "threads": info.threads,
        }
        version = self.repository.write_version(served.name, candidate.save, meta)
        promoted, reason = self._apply_policy(served.name, version, test.accuracy, promote)
        self.repository.prune(served.name)
        if promoted:
            self.on_promoted()
        job.end_model(served.name, {
            "status": "succeeded", "test_accuracy": test.accuracy, "test_loss": test.loss,
            "train_seconds": meta["train_seconds"], "train_peak_rss_bytes": peak.bytes, "version": version,
            "promoted": promoted, "promotion": reason,
        })

    def _apply_policy(self, model: str, version: int, accuracy: float, policy: str) -> tuple[bool, str]:
        if policy == "never":
            return False, "not promoted: promote=never"
        if policy == "if_better":
            current = self.repository.promoted(model)
            if current is not None and current != version:
                best = self.repository.meta(model, current).get("test_accuracy")
                if best is not None and accuracy < best:
                    return False, f"not promoted: test accuracy {accuracy:.4f} < {best:.4f} of version {current}"
        self.repository.promote(model, version)
        return True, f"promoted ({policy})"
