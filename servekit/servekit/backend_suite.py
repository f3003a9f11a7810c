"""The tests every Backend must pass, written once: a service's tests subclass ``BackendSuite``.

    class TestTorchBackend(BackendSuite):
        backend_class = TorchBackend

They train for real on a few thousand MNIST images (one epoch), so they exercise
the framework's actual training loop, serving path and weight files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from .backend import TrainConfig, TrainingData
from .mnist import load_mnist, to_model_input
from .source import model_source
from .weights import initial_weights, shared_order

REPOSITORY = Path(__file__).resolve().parents[2]  # servekit/servekit/backend_suite.py in a checkout
TRAIN_LIMIT = 2000
CONFIG = TrainConfig(epochs=1, train_limit=TRAIN_LIMIT)


class RecordedProgress:
    """A Progress that remembers every call."""

    def __init__(self):
        self.epochs, self.steps, self.records = [], [], []

    def begin_epoch(self, epoch, steps_per_epoch):
        self.epochs.append((epoch, steps_per_epoch))

    def step(self, step, loss, accuracy):
        self.steps.append((step, loss, accuracy))

    def end_epoch(self, record):
        self.records.append(record)


def mnist_dir() -> Path:
    """MNIST_DIR, or ../shared/data/mnist beside the repository."""
    return Path(os.environ.get("MNIST_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist"))


class BackendSuite:
    backend_class: type = None  # set by the subclass

    @pytest.fixture(scope="class")
    @classmethod
    def mnist(cls):
        return load_mnist(mnist_dir(), mirrors=())

    @pytest.fixture(scope="class")
    @classmethod
    def training_data(cls, mnist):
        return TrainingData(mnist.train.head(TRAIN_LIMIT), mnist.validation.head(1000), mnist.folder)

    @pytest.fixture(scope="class")
    @classmethod
    def trained(cls, training_data):
        backend = cls.backend_class()
        progress = RecordedProgress()
        history = backend.train(training_data, CONFIG, progress)
        return backend, progress, history

    @pytest.fixture(scope="class")
    @classmethod
    def x(cls, mnist):
        return to_model_input(mnist.test.images[:16])

    def test_architecture_is_the_shared_cnn(self):
        layers = self.backend_class().layers()
        assert sum(layer.params for layer in layers) == 34_826
        assert [layer.params for layer in layers if layer.params] == [320, 18_496, 16_010]
        assert layers[-1].output_shape == [None, 10]
        assert [None, 1600] in [layer.output_shape for layer in layers]

    def test_training_reports_every_step_and_epoch(self, trained):
        _, progress, history = trained
        steps = -(-TRAIN_LIMIT // CONFIG.batch_size)
        assert progress.epochs == [(1, steps)]
        assert [s[0] for s in progress.steps] == list(range(1, steps + 1))
        assert progress.steps[-1][1] < progress.steps[0][1]  # the running loss went down
        assert progress.records == history and len(history) == 1
        assert history[0].val_accuracy > 0.5 and history[0].seconds > 0

    def test_predict_gives_probabilities(self, trained, x):
        probabilities = trained[0].predict(x)
        assert probabilities.shape == (16, 10) and probabilities.dtype == np.float32
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
        assert trained[0].predict(x[:1]).shape == (1, 10)

    def test_evaluate_agrees_with_predict(self, trained, mnist, x):
        labels = mnist.test.labels[:16]
        metrics = trained[0].evaluate(x, labels)
        expected = float((trained[0].predict(x).argmax(1) == labels).mean())
        assert metrics.accuracy == pytest.approx(expected)
        assert metrics.loss > 0

    def test_same_seed_gives_the_same_model(self, trained, training_data, x):
        again = self.backend_class()
        again.train(training_data, CONFIG, RecordedProgress())
        assert np.allclose(again.predict(x), trained[0].predict(x), atol=1e-4)

    def test_save_and_load_round_trip(self, trained, x, tmp_path):
        trained[0].save(tmp_path)
        loaded = self.backend_class()
        loaded.load(tmp_path)
        assert np.allclose(loaded.predict(x), trained[0].predict(x), atol=1e-6)

    def test_weights_round_trip_through_the_neutral_layout(self, trained, x):
        """Export, import into a fresh instance: the same predictions; and an import is read back exactly."""
        exported = trained[0].export_weights()
        fresh = self.backend_class()
        fresh.import_weights(exported)
        assert np.allclose(fresh.predict(x), trained[0].predict(x), atol=1e-6)
        start = initial_weights(5)
        fresh.import_weights(start)
        assert all(np.array_equal(fresh.export_weights()[name], start[name]) for name in start)

    def test_same_start_pipeline_follows_the_shared_order(self, training_data):
        """Under same_start the first batch is the shared order's first rows, whatever the framework."""
        config = TrainConfig(seed=3, same_start=True)
        images, labels, _ = self.backend_class().first_batch(training_data, config)
        rows = shared_order(3, 0, len(training_data.train))[: config.batch_size]
        assert np.array_equal(labels, training_data.train.labels[rows])
        assert np.allclose(images, training_data.train.images[rows] / 255.0, atol=1e-6)

    def test_source_shows_the_network_and_the_training_step(self):
        """Both parts GET /source shows are declared, and each is its file's very lines."""
        for part, block in model_source(self.backend_class).items():
            assert block is not None, f"{self.backend_class.__name__} declares no {part} (servekit.source)"
            lines = (REPOSITORY / block["file"]).read_text().splitlines(keepends=True)
            assert "".join(lines[block["first_line"] - 1:block["last_line"]]) == block["code"]
            assert 0 < block["lines"] <= block["last_line"] - block["first_line"] + 1
