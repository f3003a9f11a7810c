"""The torch backend on its own: architecture, training loop, serving path, weights round trip."""

import os
from pathlib import Path

import numpy as np
import pytest
from backend import TorchBackend

from servekit.backend import TrainConfig, TrainingData
from servekit.mnist import load_mnist, to_model_input

MNIST_DIR = Path(os.environ.get("MNIST_DIR", Path(__file__).parents[3] / ".." / "shared" / "data" / "mnist"))


class RecordedProgress:
    def __init__(self):
        self.epochs, self.steps, self.records = [], [], []

    def begin_epoch(self, epoch, steps_per_epoch):
        self.epochs.append((epoch, steps_per_epoch))

    def step(self, step, loss, accuracy):
        self.steps.append((step, loss, accuracy))

    def end_epoch(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def mnist():
    return load_mnist(MNIST_DIR, mirrors=())


@pytest.fixture(scope="module")
def trained(mnist):
    backend = TorchBackend()
    progress = RecordedProgress()
    data = TrainingData(mnist.train.head(2000), mnist.validation.head(500), mnist.folder)
    history = backend.train(data, TrainConfig(epochs=1, train_limit=2000), progress)
    return backend, progress, history


def test_parameter_count_and_layer_table():
    layers = TorchBackend().layers()
    assert sum(layer.params for layer in layers) == 34_826
    assert [layer.type for layer in layers if layer.params] == ["Conv2d", "Conv2d", "Linear"]
    assert layers[2].output_shape == [None, 32, 13, 13]
    assert layers[-1].output_shape == [None, 10]


def test_training_reports_every_step(trained):
    _, progress, history = trained
    assert progress.epochs == [(1, 16)]  # ceil(2000 / 128)
    assert [s[0] for s in progress.steps] == list(range(1, 17))
    assert progress.steps[-1][1] < progress.steps[0][1]  # the running loss went down
    assert len(history) == 1 and history[0].val_accuracy > 0.5


def test_predict_gives_probabilities(trained, mnist):
    backend, _, _ = trained
    x = to_model_input(mnist.test.images[:8])
    probabilities = backend.predict(x)
    assert probabilities.shape == (8, 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_same_seed_gives_same_weights(mnist, trained):
    backend, _, _ = trained
    again = TorchBackend()
    data = TrainingData(mnist.train.head(2000), mnist.validation.head(500), mnist.folder)
    again.train(data, TrainConfig(epochs=1, train_limit=2000), RecordedProgress())
    x = to_model_input(mnist.test.images[:8])
    assert np.allclose(again.predict(x), backend.predict(x), atol=1e-5)


def test_save_and_load_round_trip(trained, mnist, tmp_path):
    backend, _, _ = trained
    backend.save(tmp_path)
    loaded = TorchBackend()
    loaded.load(tmp_path)
    x = to_model_input(mnist.test.images[:8])
    assert np.array_equal(loaded.predict(x), backend.predict(x))
    metrics = loaded.evaluate(x, mnist.test.labels[:8])
    assert 0.0 <= metrics.accuracy <= 1.0 and metrics.loss > 0
