"""A model as a service holds it: its backend class, its layer table and the version now serving."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backend import Backend
from .errors import NotReady
from .source import model_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Installed:
    """One loaded, warmed-up version: swapped in as a whole, so a request never sees half of a swap."""

    backend: Backend
    version: int | None
    meta: dict
    warmup_ms: float
    evaluating: threading.Lock = field(default_factory=threading.Lock)  # one evaluation of this instance at a time


class ServedModel:
    """One named model: what it is (layers, params) and which version currently answers for it."""

    def __init__(self, backend_class: type[Backend]):
        self.backend_class = backend_class
        blueprint = backend_class()
        self.name: str = blueprint.name
        self.framework: str = blueprint.framework
        self.backend: str = backend_name(blueprint)
        self.layers = blueprint.layers()
        self.params = sum(layer.params for layer in self.layers)
        self.source = model_source(backend_class)  # read once, at start: the code this process runs
        self._installed: Installed | None = None  # replaced whole, never changed in place

    @property
    def ready(self) -> bool:
        return self._installed is not None

    @property
    def version(self) -> int | None:
        installed = self._installed
        return installed.version if installed else None

    def current(self) -> Installed:
        """The version that answers requests; NotReady (503) before any is loaded."""
        installed = self._installed
        if installed is None:
            raise NotReady(f"model {self.name!r} is not trained yet; POST /train first")
        return installed

    def load(self, folder: Path, meta: dict, version: int) -> None:
        """Load a version into a fresh instance, warm it up, then swap it in; requests in flight finish on the old one.

        The warm-up call (graph tracing, first-call allocations) is timed and
        reported apart, so that no request pays for it and steady-state
        latencies stay clean.
        """
        backend = self.backend_class()
        backend.load(folder)
        started = time.perf_counter()
        warm_up(backend)
        warmup_ms = round((time.perf_counter() - started) * 1000.0, 3)
        self._installed = Installed(backend, version, meta, warmup_ms)
        log.info("serving %s version %s from %s", self.name, version, folder)

    def to_dict(self) -> dict:
        """The /models entry of this model."""
        installed = self._installed
        return describe(self, installed.meta if installed else {}, installed.version if installed else None,
                        ready=installed is not None, warmup_ms=installed.warmup_ms if installed else None)


def describe(model: ServedModel, meta: dict, version: int | None, ready: bool, warmup_ms: float | None) -> dict:
    """A /models entry: what the model is, and the meta of the version it names."""
    return {
        "name": model.name,
        "framework": model.framework,
        "backend": model.backend,
        "ready": ready,
        "version": version,
        "params": model.params,
        "layers": [layer.to_dict() for layer in model.layers],
        "trained_at": meta.get("trained_at"),
        "test_accuracy": meta.get("test_accuracy"),
        "test_loss": meta.get("test_loss"),
        "train_seconds": meta.get("train_seconds"),
        "train_peak_rss_bytes": meta.get("train_peak_rss_bytes"),
        "train_samples": meta.get("train_samples"),
        "warmup_ms": warmup_ms,
        "config": meta.get("config"),
        "history": meta.get("history", []),
        "data_sha256": meta.get("data_sha256"),
    }


def warm_up(backend: Backend) -> None:
    """Everything a first request would pay for: the backend's own ``warm_up`` (jitted models compile every
    batch bucket), or one one-image prediction (graph tracing, first-call allocations)."""
    if hasattr(backend, "warm_up"):
        backend.warm_up()
    else:
        backend.predict(np.zeros((1, 28, 28, 1), np.float32))


def backend_name(backend: Backend) -> str:
    """What actually runs the model's tensors: a Keras model's backend (``tensorflow``, ``jax``, ``torch``), or the
    framework itself."""
    return getattr(backend, "backend", None) or backend.framework
