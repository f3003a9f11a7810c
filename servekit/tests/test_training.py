"""The trainer over a real repository and real MNIST, with a backend whose training diverges."""

from __future__ import annotations

import math
import time

import numpy as np

from servekit.backend import EpochRecord, FrameworkInfo, Layer, Metrics, TrainConfig
from servekit.jobs import FINISHED
from servekit.memory import resident_memory
from servekit.models import describe
from servekit.service import ModelService
from servekit.settings import Settings
from servekit.training import Trainer


class DivergingBackend:
    """Trains "successfully" to a NaN loss, as a too-high learning rate does."""

    name, framework = "diverging", "none"

    def layers(self):
        return [Layer("Dense", [None, 10], 10)]

    def train(self, data, config, progress):
        progress.begin_epoch(1, 1)
        progress.step(1, math.nan, 0.1)
        record = EpochRecord(1, math.nan, 0.1, math.inf, 0.1, 0.01)
        progress.end_epoch(record)
        return [record]

    def evaluate(self, x, y):
        return Metrics(math.nan, 0.1)

    def predict(self, x):
        return np.full((len(x), 10), np.nan, np.float32)

    def save(self, folder):
        (folder / "weights").write_bytes(b"nan")

    def load(self, folder):
        pass


class AllocatingBackend(DivergingBackend):
    """Trains to finite numbers, holding 100 MiB of written memory for a moment, as a training step's buffers."""

    name = "allocating"

    def train(self, data, config, progress):
        np.ones(100 << 20, np.uint8)  # every page written: resident, then freed
        record = EpochRecord(1, 1.0, 0.5, 1.0, 0.5, 0.01)
        progress.begin_epoch(1, 1)
        progress.step(1, 1.0, 0.5)
        progress.end_epoch(record)
        return [record]

    def evaluate(self, x, y):
        return Metrics(1.0, 0.5)


def wait(job):
    deadline = time.monotonic() + 10
    while job.status not in FINISHED and time.monotonic() < deadline:
        time.sleep(0.05)
    return job.to_dict()


def settings_for(tmp_path, mnist_dir) -> Settings:
    return Settings(port=0, mnist_dir=mnist_dir, model_repository=tmp_path, max_upload_bytes=1,
                    intra_op_threads=1, inter_op_threads=1, max_infer_batch=1)


def test_the_peak_memory_while_training_is_recorded(tmp_path, mnist_dir):
    """The process's peak RSS while train() ran, freed memory included: in the job, the version and /models."""
    service = ModelService([AllocatingBackend], FrameworkInfo("none", "0"), settings_for(tmp_path, mnist_dir))
    trainer = Trainer(service)
    before = resident_memory()["rss_bytes"]
    status = wait(trainer.jobs.get(trainer.start_training("allocating", TrainConfig(epochs=1))["job_id"]))
    assert status["status"] == "succeeded", status["error"]
    peak = status["results"]["allocating"]["train_peak_rss_bytes"]
    assert peak >= before + (90 << 20)
    meta = service.repository.meta("allocating", status["results"]["allocating"]["version"])
    assert meta["train_peak_rss_bytes"] == peak
    assert describe(service.models["allocating"], meta, 1, ready=True, warmup_ms=None)["train_peak_rss_bytes"] == peak


def test_a_diverged_training_fails_with_its_reason_and_writes_nothing(tmp_path, mnist_dir):
    service = ModelService([DivergingBackend], FrameworkInfo("none", "0"), settings_for(tmp_path, mnist_dir))
    trainer = Trainer(service)
    accepted = trainer.start_training("diverging", TrainConfig(epochs=1, train_limit=100, learning_rate=10.0))
    status = wait(trainer.jobs.get(accepted["job_id"]))
    assert status["status"] == "failed" and "diverged" in status["error"] and "learning_rate" in status["error"]
    assert status["results"]["diverging"]["history"][0]["loss"] is None  # JSON-safe: null, not NaN
    assert status["loss"] is None
    assert service.repository.versions("diverging") == []
