"""The server role: evaluate and predict with the promoted version of every model."""

from __future__ import annotations

import time

import numpy as np

from .backend import Backend
from .errors import ApiError, BadRequest
from .mnist import to_model_input
from .service import ModelService


class Serving:
    """Answers /evaluate and /predict from the versions the watcher installed."""

    def __init__(self, service: ModelService):
        self.service = service

    def evaluate(self, name: str | None, limit: int | None) -> list[dict]:
        """Test-split loss and accuracy of the named (or every) model's serving version."""
        selected = self.service.select(name)
        test = self.service.require_data().test.head(limit)
        x = to_model_input(test.images)
        results = []
        for served in selected:
            installed = served.current()
            started = time.perf_counter()
            metrics = installed.backend.evaluate(x, test.labels)
            results.append(
                {
                    "model": served.name,
                    "model_version": installed.version,
                    "accuracy": metrics.accuracy,
                    "loss": metrics.loss,
                    "samples": len(test),
                    "seconds": round(time.perf_counter() - started, 4),
                    "trained_at": installed.meta.get("trained_at"),
                    "served_by": self.service.settings.served_by,
                }
            )
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
                predictions.append({"model": served.name, "model_version": None, "framework": info.framework,
                                    "served_by": served_by,
                                    "error": f"model {served.name!r} is not trained yet; POST /train first"})
                continue
            installed = served.current()
            probabilities, inference_ms = timed_predict(installed.backend, x)
            if not np.all(np.isfinite(probabilities)):
                raise ApiError(f"model {served.name!r} (version {installed.version}) gave non-finite output "
                               "for this input", 422)
            for row in probabilities:
                predictions.append(
                    {
                        "model": served.name,
                        "model_version": installed.version,
                        "framework": info.framework,
                        "framework_version": info.version,
                        "label": int(np.argmax(row)),
                        "probabilities": [round(float(p), 6) for p in row],
                        "inference_ms": round(inference_ms, 3),
                        "served_by": served_by,
                    }
                )
        return predictions


def timed_predict(backend: Backend, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Run the model call alone under a clock: (probabilities, milliseconds)."""
    started = time.perf_counter()
    probabilities = backend.predict(x)
    return probabilities, (time.perf_counter() - started) * 1000.0
