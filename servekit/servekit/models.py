"""A model as the service holds it: its backend class, its layer table and the instance now serving."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from .backend import Backend
from .checkpoints import CheckpointStore
from .errors import NotReady

log = logging.getLogger(__name__)


class ServedModel:
    """One named model: what it is (layers, params) and what currently answers for it."""

    def __init__(self, backend_class: type[Backend]):
        self.backend_class = backend_class
        blueprint = backend_class()
        self.name: str = blueprint.name
        self.framework: str = blueprint.framework
        self.layers = blueprint.layers()
        self.params = sum(layer.params for layer in self.layers)
        self.meta: dict = {}
        self.warmup_ms: float | None = None
        self._serving: Backend | None = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._serving is not None

    def serving(self) -> Backend:
        """The trained instance that answers requests; NotReady (503) before any training."""
        backend = self._serving
        if backend is None:
            raise NotReady(f"model {self.name!r} is not trained yet; POST /train first")
        return backend

    def install(self, backend: Backend, meta: dict) -> None:
        """Warm up a newly trained (or loaded) instance, then swap it in; requests in flight finish on the old one.

        The warm-up call (graph tracing, first-call allocations) is timed and
        reported apart, so that no request pays for it and steady-state
        latencies stay clean.
        """
        started = time.perf_counter()
        backend.predict(np.zeros((1, 28, 28, 1), np.float32))
        self.warmup_ms = round((time.perf_counter() - started) * 1000.0, 3)
        with self._lock:
            self._serving, self.meta = backend, meta

    def load_checkpoint(self, store: CheckpointStore) -> bool:
        """Serve the stored checkpoint, if there is a readable one."""
        found = store.current(self.name)
        if found is None:
            return False
        folder, meta = found
        try:
            backend = self.backend_class()
            backend.load(folder)
        except Exception:  # a damaged checkpoint must not keep the service from starting
            log.exception("could not load the checkpoint of %s from %s", self.name, folder)
            return False
        self.install(backend, meta)
        log.info("loaded %s from %s", self.name, folder)
        return True

    def to_dict(self) -> dict:
        """The /models entry of this model."""
        meta = self.meta
        return {
            "name": self.name,
            "framework": self.framework,
            "ready": self.ready,
            "params": self.params,
            "layers": [layer.to_dict() for layer in self.layers],
            "trained_at": meta.get("trained_at"),
            "test_accuracy": meta.get("test_accuracy"),
            "test_loss": meta.get("test_loss"),
            "train_seconds": meta.get("train_seconds"),
            "train_samples": meta.get("train_samples"),
            "warmup_ms": self.warmup_ms,
            "config": meta.get("config"),
            "history": meta.get("history", []),
            "data_sha256": meta.get("data_sha256"),
        }
