"""What a framework service does, independent of HTTP: train, evaluate, predict."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import numpy as np

from .backend import Backend, FrameworkInfo, TrainConfig, TrainingData
from .checkpoints import CheckpointStore
from .errors import BadRequest, NotFound, NotReady
from .jobs import JobRunner, TrainingJob, progress_of
from .mnist import MnistData, MnistUnavailable, load_mnist, to_model_input
from .models import ServedModel
from .settings import Settings

log = logging.getLogger(__name__)


class ModelService:
    """The models of one service, their checkpoints, data and training jobs."""

    def __init__(self, backend_classes: list[type[Backend]], info: FrameworkInfo, settings: Settings):
        self.info = info
        self.settings = settings
        self.models: dict[str, ServedModel] = {}
        for backend_class in backend_classes:
            served = ServedModel(backend_class)
            self.models[served.name] = served
        self.store = CheckpointStore(settings.model_dir)
        self.jobs = JobRunner()
        self.data: MnistData | None = None
        self.data_error: str | None = None
        try:
            self.data = load_mnist(settings.mnist_dir)
        except MnistUnavailable as exc:
            self.data_error = str(exc)
            log.error("%s", exc)
        for served in self.models.values():
            served.load_checkpoint(self.store)

    def select(self, name: str | None) -> list[ServedModel]:
        """The named model (NotFound if unknown), or all models when name is None."""
        if name is None:
            return list(self.models.values())
        if name not in self.models:
            raise NotFound(f"unknown model {name!r}; this service has {', '.join(self.models)}")
        return [self.models[name]]

    def require_data(self) -> MnistData:
        """The loaded MNIST data; NotReady (503) when it could not be loaded."""
        if self.data is None:
            raise NotReady(f"MNIST is not available: {self.data_error}")
        return self.data

    def start_training(self, name: str | None, config: TrainConfig) -> dict:
        """Queue a job training the named model (or every model, in turn); returns its status."""
        selected = self.select(name)
        self.require_data()
        job = TrainingJob([m.name for m in selected], config.epochs, config.to_dict())
        return self.jobs.submit(job, lambda j: self._train_all(j, selected, config))

    def evaluate(self, name: str | None, limit: int | None) -> list[dict]:
        """Test-split loss and accuracy of the named (or every) trained model."""
        selected = self.select(name)
        test = self.require_data().test.head(limit)
        x = to_model_input(test.images)
        results = []
        for served in selected:
            backend = served.serving()
            started = time.perf_counter()
            metrics = backend.evaluate(x, test.labels)
            results.append(
                {
                    "model": served.name,
                    "accuracy": metrics.accuracy,
                    "loss": metrics.loss,
                    "samples": len(test),
                    "seconds": round(time.perf_counter() - started, 4),
                    "trained_at": served.meta.get("trained_at"),
                }
            )
        return results

    def predict(self, x: np.ndarray, name: str | None) -> list[dict]:
        """Each selected model's label, probabilities and model-call time for images (N, 28, 28, 1)."""
        if x.ndim != 4 or x.shape[1:] != (28, 28, 1):
            raise BadRequest(f"expected images of shape [N, 28, 28, 1], got {list(x.shape)}")
        predictions = []
        for served in self.select(name):
            probabilities, inference_ms = timed_predict(served.serving(), x)
            for row in probabilities:
                predictions.append(
                    {
                        "model": served.name,
                        "framework": self.info.framework,
                        "framework_version": self.info.version,
                        "label": int(np.argmax(row)),
                        "probabilities": [round(float(p), 6) for p in row],
                        "inference_ms": round(inference_ms, 3),
                    }
                )
        return predictions

    def _train_all(self, job: TrainingJob, selected: list[ServedModel], config: TrainConfig) -> None:
        failures = []
        for served in selected:
            try:
                self._train_one(job, served, config)
            except Exception as exc:  # the next model still trains; the job reports every failure
                log.exception("training %s failed", served.name)
                failures.append(f"{served.name}: {type(exc).__name__}: {exc}")
                job.end_model(served.name, {"status": "failed", "error": str(exc)})
        if failures:
            raise RuntimeError("; ".join(failures))

    def _train_one(self, job: TrainingJob, served: ServedModel, config: TrainConfig) -> None:
        data = self.require_data()
        job.begin_model(served.name)
        candidate = served.backend_class()  # a fresh network; the served one keeps answering
        training_data = TrainingData(data.train.head(config.train_limit), data.validation, data.folder)
        started = time.perf_counter()
        history = candidate.train(training_data, config, progress_of(job))
        train_seconds = time.perf_counter() - started
        test = candidate.evaluate(to_model_input(data.test.images), data.test.labels)
        meta = {
            "model": served.name,
            "framework": self.info.framework,
            "framework_version": self.info.version,
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": config.to_dict(),
            "train_samples": len(training_data.train),
            "history": [record.to_dict() for record in history],
            "train_seconds": round(train_seconds, 3),
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "data_sha256": data.sha256,
            "threads": self.info.threads,
        }
        self.store.save(served.name, candidate.save, meta)
        served.install(candidate, meta)
        outcome = {"status": "succeeded", "test_accuracy": test.accuracy, "test_loss": test.loss}
        job.end_model(served.name, {**outcome, "train_seconds": meta["train_seconds"]})


def timed_predict(backend: Backend, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Run the model call alone under a clock: (probabilities, milliseconds)."""
    started = time.perf_counter()
    probabilities = backend.predict(x)
    return probabilities, (time.perf_counter() - started) * 1000.0
