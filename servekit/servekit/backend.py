"""The interface a framework implements, and the plain data it exchanges with the core.

A service contributes one ``Backend`` class per model. The core makes a fresh
instance to train (so that the served instance keeps answering meanwhile),
then swaps it in once it is trained, evaluated and saved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .mnist import Split


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters: the defaults of docs/api.md, the same for every model."""

    epochs: int = 5
    batch_size: int = 128
    learning_rate: float = 0.001
    seed: int = 42
    train_limit: int | None = None
    same_start: bool = False  # begin from servekit.weights.initial_weights(seed), the start every framework shares

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainingData:
    """What a backend trains on: the (possibly limited) train split and the validation split.

    ``folder`` holds the IDX files the arrays came from, for frameworks whose
    own dataset classes read them (torchvision's ``MNIST``).
    """

    train: Split
    validation: Split
    folder: Path


@dataclass(frozen=True)
class EpochRecord:
    """One line of a training history."""

    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Metrics:
    """Loss and accuracy over a set of examples."""

    loss: float
    accuracy: float


@dataclass(frozen=True)
class Layer:
    """One row of a model's layer table, as Keras' ``summary()`` prints it."""

    type: str
    output_shape: list[int | None]
    params: int

    def to_dict(self) -> dict:
        return asdict(self)


class Progress(Protocol):
    """Where a backend reports training progress; the core turns it into job status."""

    def begin_epoch(self, epoch: int, steps_per_epoch: int) -> None: ...

    def step(self, step: int, loss: float, accuracy: float) -> None: ...

    def end_epoch(self, record: EpochRecord) -> None: ...


class Backend(Protocol):
    """One model of one framework. A new instance holds a new, untrained network."""

    name: str  # the model name of the contract: "torch", "tf-native", ...
    framework: str  # "torch", "keras", "tensorflow" or "jax"
    # Optional: ``backend`` (what runs a Keras model's tensors: "tensorflow", "jax", "torch"; the framework when
    # absent), ``warm_up()`` (called before a version is swapped in; one one-image prediction when absent), and
    # ``network_source`` and ``train_step_source``: what GET /source shows of the model's code (servekit.source).

    def layers(self) -> list[Layer]:
        """The layer table, read from the framework's model object."""
        ...

    def train(self, data: TrainingData, config: TrainConfig, progress: Progress) -> list[EpochRecord]:
        """Train this instance's network; report every step and epoch to ``progress``."""
        ...

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> Metrics:
        """Loss and accuracy on float32 (N, 28, 28, 1) images and integer labels."""
        ...

    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, 28, 28, 1) -> float32 (N, 10) probabilities, on the fast serving path."""
        ...

    def save(self, folder: Path) -> None:
        """Write the weights, in the framework's own format, into the (new, empty) folder."""
        ...

    def load(self, folder: Path) -> None:
        """Read weights written by ``save``."""
        ...

    def first_batch(self, data: TrainingData, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, str]:
        """The first batch this model's own input pipeline yields for ``config`` (its seed and batch size):
        float32 images (N, 28, 28) in 0..1, their labels, and the pipeline's name."""
        ...

    def export_weights(self) -> dict[str, np.ndarray]:
        """The network's weights in the framework-neutral layout of ``servekit.weights``."""
        ...

    def import_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Set the network's weights from the framework-neutral layout (checked by ``servekit.weights``)."""
        ...


@dataclass
class FrameworkInfo:
    """What /health reports about the framework a service runs."""

    framework: str
    version: str
    threads: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)  # other libraries the models run on, by name
