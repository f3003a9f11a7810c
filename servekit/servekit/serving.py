"""The server role: evaluate and predict with the promoted version of every model."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import numpy as np

from .backend import Backend
from .batching import BatchResult, DynamicBatcher
from .errors import ApiError, BadRequest
from .mnist import to_model_input
from .models import ServedModel
from .service import ModelService


class Serving:
    """Answers /evaluate and /predict from the versions the watcher installed.

    Predictions go through one dynamic batcher per model (``MAX_BATCH``, ``BATCH_WINDOW_MS``);
    ``on_batch(model, images, seconds)`` is told the size and duration of every model call.
    """

    def __init__(self, service: ModelService, on_batch: Callable[[str, int, float], None] | None = None):
        self.service = service
        settings = service.settings
        on_batch = on_batch or (lambda model, images, seconds: None)
        self.batchers = {
            name: DynamicBatcher(self._runner(served), settings.max_batch, settings.batch_window_ms / 1000.0,
                                 on_batch=lambda images, seconds, name=name: on_batch(name, images, seconds))
            for name, served in service.models.items()
        }

    @staticmethod
    def _runner(served: ServedModel):
        def run(images: np.ndarray, request_ids: list[str]) -> tuple[np.ndarray, int | None]:
            installed = served.current()  # the version installed when the batch runs answers the whole batch
            return installed.backend.predict(images), installed.version

        return run

    @contextmanager
    def incoming(self, name: str | None) -> Iterator[None]:
        """Around reading a request's input: batches forming for its models wait for it (briefly)."""
        with ExitStack() as stack:
            for served in self.service.select(name):
                stack.enter_context(self.batchers[served.name].incoming())
            yield

    def infer(self, served: ServedModel, x: np.ndarray) -> BatchResult:
        """The model's probabilities for images (N, 28, 28, 1), batched with concurrent requests."""
        served.current()  # NotReady (503) before anything is queued
        result = self.batchers[served.name].predict(x)
        if not np.all(np.isfinite(result.outputs)):
            raise ApiError(f"model {served.name!r} (version {result.tag}) gave non-finite output for this input", 422)
        return result

    def evaluate(self, name: str | None, limit: int | None, per_image: bool = False) -> list[dict]:
        """Test-split loss and accuracy of the named (or every) model's serving version.

        Without a name, a model not trained yet gets an entry with ``error`` while the others are evaluated, as
        in /predict; NotReady (503) when none can be. ``per_image`` adds, for every test image in order, the true
        label (``labels``), the predicted one (``predicted``) and its probability (``confidence``): what the
        gateway's statistics are computed from.
        """
        selected = self.service.select(name)
        if not any(served.ready for served in selected):
            selected[0].current()  # NotReady (503): nothing here can be evaluated
        test = self.service.require_data().test.head(limit)
        x = to_model_input(test.images)
        results = []
        for served in selected:
            if not served.ready:
                results.append(self._not_ready(served))
                continue
            installed = served.current()
            started = time.perf_counter()
            with installed.evaluating:  # Keras keeps metric state in the model: one evaluation at a time
                metrics = installed.backend.evaluate(x, test.labels)
            result = {
                "model": served.name,
                "model_version": installed.version,
                "accuracy": metrics.accuracy,
                "loss": metrics.loss,
                "samples": len(test),
                "seconds": round(time.perf_counter() - started, 4),
                "trained_at": installed.meta.get("trained_at"),
                "served_by": self.service.settings.served_by,
            }
            if per_image:
                probabilities = predict_in_batches(installed.backend, x)
                result["labels"] = test.labels.tolist()
                result["predicted"] = probabilities.argmax(axis=1).tolist()
                result["confidence"] = np.round(probabilities.max(axis=1), 6).tolist()
            results.append(result)
        return results

    def predict(self, x: np.ndarray, name: str | None) -> list[dict]:
        """Each selected model's label, probabilities and model-call time for images (N, 28, 28, 1)."""
        if x.ndim != 4 or x.shape[1:] != (28, 28, 1):
            raise BadRequest(f"expected images of shape [N, 28, 28, 1], got {list(x.shape)}")
        info, served_by = self.service.info, self.service.settings.served_by
        selected = self.service.select(name)
        if not any(served.ready for served in selected):
            selected[0].current()  # NotReady (503): nothing here can answer
        predictions = []
        for served in selected:
            if not served.ready:  # the ready models still answer; this one says why it cannot
                predictions.append({**self._not_ready(served), "framework": info.framework})
                continue
            result = self.infer(served, x)
            for row in result.outputs:
                predictions.append(
                    {
                        "model": served.name,
                        "model_version": result.tag,
                        "framework": info.framework,
                        "framework_version": info.version,
                        "label": int(np.argmax(row)),
                        "probabilities": [round(float(p), 6) for p in row],
                        "inference_ms": round(result.inference_ms, 3),
                        "batch_size": result.batch_size,
                        "queue_ms": round(result.queue_ms, 3),
                        "served_by": served_by,
                    }
                )
        return predictions

    def _not_ready(self, served: ServedModel) -> dict:
        """The entry of a model that cannot answer yet, in /predict and /evaluate."""
        return {"model": served.name, "model_version": None, "served_by": self.service.settings.served_by,
                "error": f"model {served.name!r} is not trained yet; POST /train first"}


def predict_in_batches(backend: Backend, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Probabilities for many images, a thousand at a time (bounded memory, one traced shape)."""
    return np.concatenate([backend.predict(x[start:start + batch]) for start in range(0, len(x), batch)])
