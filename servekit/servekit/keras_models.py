"""The Keras models, written once for every Keras 3 backend: the same network with ``keras.Sequential`` and with
the functional API, both trained by ``compile`` + ``fit``.

The keras service runs them on TensorFlow (``keras-sequential``, ``keras-functional``), the jax service runs
``keras-sequential``'s network on JAX (``keras-jax``) and the torch service on PyTorch (``keras-torch``). Keras
reads its backend from ``KERAS_BACKEND`` when it is first imported, so a service sets it before importing this
module; only the serving function differs per backend (``serving_function``).

This module imports Keras: only the services that run Keras models import it (the rest of servekit imports no
framework).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from .backend import EpochRecord, Layer, Metrics, Progress, TrainConfig, TrainingData
from .buckets import bucket_sizes, max_batch_from_env, run_in_buckets, warm_up_buckets
from .layer_tables import keras_layer_table
from .memory import freed_memory_kept
from .mnist import to_model_input
from .weights import Weights, initial_weights, keras_export, keras_import, shared_order

EVAL_BATCH = 1000
WEIGHTS_FILE = "model.keras"


class ProgressCallback(keras.callbacks.Callback):
    """Feeds ``fit``'s epochs and batches into the job's progress."""

    def __init__(self, progress: Progress, steps_per_epoch: int):
        super().__init__()
        self.progress, self.steps_per_epoch = progress, steps_per_epoch
        self.records: list[EpochRecord] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        self.progress.begin_epoch(epoch + 1, self.steps_per_epoch)

    def on_train_batch_end(self, batch, logs=None):
        self.progress.step(batch + 1, float(logs["loss"]), float(logs["accuracy"]))

    def on_epoch_end(self, epoch, logs=None):
        record = EpochRecord(
            epoch + 1, float(logs["loss"]), float(logs["accuracy"]), float(logs["val_loss"]),
            float(logs["val_accuracy"]), round(time.perf_counter() - self.started, 3),
        )
        self.records.append(record)
        self.progress.end_epoch(record)


class SharedOrderBatches(keras.utils.PyDataset):
    """Batches in ``servekit.weights.shared_order``, a new order each epoch: what every framework trains on
    under ``same_start``."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
        super().__init__()
        self.x, self.y, self.batch_size, self.seed, self.epoch = x, y, batch_size, seed, 0
        self.order = shared_order(seed, 0, len(x))

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size: (index + 1) * self.batch_size]
        return self.x[rows], self.y[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = shared_order(self.seed, self.epoch, len(self.x))


class KerasBackend:
    """What every Keras model shares: compile + fit, evaluate, a compiled serving function, .keras files."""

    framework = "keras"

    def __init__(self):
        self.backend = keras.backend.backend()  # "tensorflow", "jax" or "torch": reported per model
        self.model = self.build()
        self._serve = None

    def build(self) -> keras.Model:
        raise NotImplementedError

    def layers(self) -> list[Layer]:
        return keras_layer_table(self.model)

    def train(self, data: TrainingData, config: TrainConfig, progress: Progress) -> list[EpochRecord]:
        """``compile`` + ``fit`` with Adam and categorical cross-entropy on the shared split."""
        keras.utils.set_random_seed(config.seed)
        self.model, self._serve = self.build(), None  # initial weights from the seeded generators
        if config.same_start:  # or the start every framework shares (servekit.weights)
            self.import_weights(initial_weights(config.seed))
        self.model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
        )
        steps = -(-len(data.train) // config.batch_size)
        callback = ProgressCallback(progress, steps)
        validation = (to_model_input(data.validation.images), keras.utils.to_categorical(data.validation.labels, 10))
        x, y = to_model_input(data.train.images), keras.utils.to_categorical(data.train.labels, 10)
        if config.same_start:  # the batches every framework trains on, in the shared order
            inputs = {"x": SharedOrderBatches(x, y, config.batch_size, config.seed)}
        else:
            inputs = {"x": x, "y": y, "batch_size": config.batch_size, "shuffle": True}
        self.model.fit(**inputs, epochs=config.epochs, verbose=0, validation_data=validation, callbacks=[callback])
        return callback.records

    train_step_source = train  # what GET /source shows as the training step (servekit.source)

    def first_batch(self, data: TrainingData, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, str]:
        """The arrays ``fit`` is given, first ``batch_size`` of them (``fit`` then shuffles them itself); under
        ``same_start``, the first batch of the shared order."""
        if config.same_start:
            images, labels = SharedOrderBatches(to_model_input(data.train.images), data.train.labels,
                                                config.batch_size, config.seed)[0]
            return images[..., 0], labels, "Keras PyDataset in the shared order (same_start)"
        images = to_model_input(data.train.images[: config.batch_size])[..., 0]
        return images, data.train.labels[: config.batch_size], "Keras arrays (as given to fit, before its shuffle)"

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> Metrics:
        """Keras' own ``evaluate`` on the given images and labels."""
        self._ensure_compiled()
        result = self.model.evaluate(
            x, keras.utils.to_categorical(y, 10), batch_size=EVAL_BATCH, verbose=0, return_dict=True
        )
        return Metrics(loss=float(result["loss"]), accuracy=float(result["accuracy"]))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The backend's compiled call of the network (never ``model.predict()`` per request, ~100x slower for
        one image): see ``serving_function``."""
        if self._serve is None:
            self._serve = serving_function(self.model)
        return self._serve(np.asarray(x, np.float32))

    def warm_up(self) -> None:
        """Compile what serving will call before the version is swapped in: every batch bucket under JAX."""
        warm_up_buckets(self.predict, bucket_sizes(max_batch_from_env()) if self.backend == "jax" else [1])

    def save(self, folder: Path) -> None:
        self.model.save(folder / WEIGHTS_FILE)

    def load(self, folder: Path) -> None:
        self.model, self._serve = keras.models.load_model(folder / WEIGHTS_FILE, compile=False), None

    def export_weights(self) -> Weights:
        return keras_export(self.model)

    def import_weights(self, weights: Weights) -> None:
        keras_import(self.model, weights)
        self._serve = None  # the serving function holds the weights it was made with

    def _ensure_compiled(self) -> None:
        if not self.model.compiled:
            self.model.compile(loss="categorical_crossentropy", metrics=["accuracy"])


class SequentialBackend(KerasBackend):
    """``keras-sequential``: the network as a ``keras.Sequential`` list of layers."""

    name = "keras-sequential"

    def build(self) -> keras.Model:
        return keras.Sequential(
            [
                keras.Input(shape=(28, 28, 1)),
                keras.layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
                keras.layers.MaxPooling2D(pool_size=(2, 2)),
                keras.layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
                keras.layers.MaxPooling2D(pool_size=(2, 2)),
                keras.layers.Flatten(),
                keras.layers.Dropout(0.5),
                keras.layers.Dense(10, activation="softmax"),
            ],
            name="keras_sequential",
        )

    network_source = build  # what GET /source shows as the network (servekit.source)


class FunctionalBackend(KerasBackend):
    """``keras-functional``: the same network through the functional API, input to output."""

    name = "keras-functional"

    def build(self) -> keras.Model:
        inputs = keras.Input(shape=(28, 28, 1), name="image")
        x = keras.layers.Conv2D(32, (3, 3), activation="relu")(inputs)
        x = keras.layers.MaxPooling2D((2, 2))(x)
        x = keras.layers.Conv2D(64, (3, 3), activation="relu")(x)
        x = keras.layers.MaxPooling2D((2, 2))(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dropout(0.5)(x)
        outputs = keras.layers.Dense(10, activation="softmax", name="probabilities")(x)
        return keras.Model(inputs, outputs, name="keras_functional")

    network_source = build


def serving_function(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """float32 (N, 28, 28, 1) -> (N, 10) probabilities through the running backend's compiled path."""
    return {"tensorflow": _tensorflow_serving, "jax": _jax_serving, "torch": _torch_serving}[keras.backend.backend()](
        model)


def _tensorflow_serving(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """A traced graph's concrete function: calling the ``tf.function`` itself re-binds its arguments to the
    signature on every call, 100 us of a one-image call's 390 here."""
    import tensorflow as tf

    concrete = tf.function(lambda images: model(images, training=False),
                           input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)]).get_concrete_function()
    return lambda x: concrete(tf.convert_to_tensor(x, tf.float32)).numpy()


def _jax_serving(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """``stateless_call`` under ``jax.jit``, in batch buckets (XLA compiles one program per shape: see
    servekit.buckets), over a copy of the weights taken now. Not the variables themselves: Keras' JAX trainer
    donates their arrays in ``fit`` and ``evaluate`` and empties the variables while it runs, so a prediction
    beside an evaluation read no weights at all (a 500 seen under concurrent /predict and /evaluate)."""
    import jax

    @jax.jit
    def forward(trainable, non_trainable, images):
        return model.stateless_call(trainable, non_trainable, images, training=False)[0]

    trainable = [jax.device_put(np.array(variable.value)) for variable in model.trainable_variables]
    non_trainable = [jax.device_put(np.array(variable.value)) for variable in model.non_trainable_variables]
    sizes = bucket_sizes(max_batch_from_env())
    return lambda x: run_in_buckets(
        lambda batch: np.asarray(forward(trainable, non_trainable, batch), np.float32), x, sizes)


def _torch_serving(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """The model called eagerly on a CPU tensor without autograd (what PyTorch serving does)."""
    import torch

    def call(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x), training=False).cpu().numpy().astype(np.float32, copy=False)

    return call


def keras_versions() -> dict:
    """What /health reports about Keras: its version and the backend it runs on."""
    return {"keras": keras.__version__, "keras_backend": keras.backend.backend()}


class FreedMemoryKept:
    """Mixed in before a Keras backend on JAX or PyTorch: ``fit`` runs with glibc's malloc keeping freed buffers
    (servekit.memory.freed_memory_kept). Their steps malloc and free every step's activations, which default glibc
    unmapped and faulted in again: keras-torch 829,000 page faults and 8.1 s an epoch of 20,000 images, against 70
    and 6.4 s (scripts/bench_training.py --models keras-torch --train-limit 20000). TensorFlow reuses its buffers."""

    def train(self, data: TrainingData, config: TrainConfig, progress: Progress) -> list[EpochRecord]:
        """The Keras backend's ``train``, with freed memory kept."""
        with freed_memory_kept():
            return super().train(data, config, progress)
