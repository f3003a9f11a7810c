"""The verdict over the models being served: their answers on the 10,000 test images, compared pair by pair.

Each service is asked once per model version for its per-image answers (``POST /evaluate`` with
``per_image``); the answers are kept until the model's version changes, so /compare stays fast
between runs. The statistics themselves are in ``verdict.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import numpy as np

from .clients import ServiceDirectory, ServiceError
from .verdict import disagreements, verdict

log = logging.getLogger(__name__)

EVALUATE_TIMEOUT_S = 300.0


class Judge:
    """Per-image test-set answers of the served versions, and what they say about the models' differences."""

    def __init__(self, directory: ServiceDirectory):
        self.directory = directory
        self._answers: dict[str, dict] = {}  # model -> {"version", "labels", "predicted", "confidence"}
        self._lock = threading.Lock()

    def answers(self, rows: Iterable[dict]) -> dict[str, dict]:
        """Each ready model's per-image answers (``rows``: /compare rows with model, service, version, ready)."""
        wanted = {r["model"]: r for r in rows if r.get("ready") and r.get("version") is not None}
        with self._lock:
            missing = [r for m, r in wanted.items() if self._answers.get(m, {}).get("version") != r["version"]]
        by_service: dict[str, list[str]] = {}
        for row in missing:
            by_service.setdefault(row["service"], []).append(row["model"])
        if by_service:
            fetched = self.directory.fan_out(lambda client: self._fetch(client, by_service[client.name]),
                                             list(by_service), pool="batch")
            for service, result in fetched.items():
                if isinstance(result, Exception):
                    log.warning("per-image answers of %s: %s", service, result)
                    continue
                with self._lock:
                    self._answers.update(result)
        with self._lock:
            return {m: self._answers[m] for m, r in wanted.items()
                    if self._answers.get(m, {}).get("version") == r["version"]}

    def verdict(self, rows: list[dict]) -> dict | None:
        """The statistics over every ready model (None with fewer than two)."""
        found = self.answers(rows)
        if len(found) < 2:
            return None
        return verdict(_labels(found), _models(found))

    def disagreements(self, rows: list[dict], limit: int) -> tuple[list[dict], list[str]]:
        """Test images on which the ready models disagree (most split first), and the models compared."""
        found = self.answers(rows)
        if len(found) < 2:
            return [], sorted(found)
        return disagreements(_labels(found), _models(found), limit=limit), list(found)

    def _fetch(self, client, models: list[str]) -> dict[str, dict]:
        answers = {}
        for model in models:
            try:
                body = client.call("POST", "/evaluate", EVALUATE_TIMEOUT_S,
                                   json={"model": model, "per_image": True}).body
            except ServiceError as exc:
                log.warning("per-image answers of %s: %s", model, exc)
                continue
            result = body["results"][0]
            answers[model] = {
                "version": result["model_version"],
                "labels": np.asarray(result["labels"], np.int64),
                "predicted": np.asarray(result["predicted"], np.int64),
                "confidence": np.asarray(result["confidence"], np.float64),
            }
        return answers


def _labels(found: dict[str, dict]) -> np.ndarray:
    return next(iter(found.values()))["labels"]


def _models(found: dict[str, dict]) -> dict[str, dict]:
    return {m: {"predicted": a["predicted"], "confidence": a["confidence"]} for m, a in found.items()}
