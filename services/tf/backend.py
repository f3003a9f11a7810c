"""The TensorFlow models, both trained by a hand-written ``tf.GradientTape`` loop over ``tf.data``.

``tf-native`` is low-level TensorFlow: ``tf.Variable`` weights, ``tf.nn`` ops and a
hand-written Adam. ``tf-hybrid`` is the same network from Keras layers, trained
by the same kind of loop with Keras' Adam.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from servekit.backend import EpochRecord, Layer, Metrics, Progress, TrainConfig, TrainingData
from servekit.layer_tables import keras_layer_table
from servekit.mnist import to_model_input
from servekit.weights import Weights, check_weights, initial_weights, keras_export, keras_import, shared_order

EVAL_BATCH = 1000
IMAGE_SPEC = tf.TensorSpec([None, 28, 28, 1], tf.float32)


def glorot_uniform(shape: list[int], fan_in: int, fan_out: int) -> tf.Tensor:
    """Glorot/Xavier-uniform initial weights, as Keras documents its default."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return tf.random.uniform(shape, -limit, limit)


class NativeCNN(tf.Module):
    """The network as raw variables and ``tf.nn`` ops; returns logits."""

    def __init__(self):
        super().__init__(name="tf_native")
        self.conv1_w = tf.Variable(glorot_uniform([3, 3, 1, 32], 3 * 3 * 1, 3 * 3 * 32), name="conv1_w")
        self.conv1_b = tf.Variable(tf.zeros([32]), name="conv1_b")
        self.conv2_w = tf.Variable(glorot_uniform([3, 3, 32, 64], 3 * 3 * 32, 3 * 3 * 64), name="conv2_w")
        self.conv2_b = tf.Variable(tf.zeros([64]), name="conv2_b")
        self.dense_w = tf.Variable(glorot_uniform([1600, 10], 1600, 10), name="dense_w")
        self.dense_b = tf.Variable(tf.zeros([10]), name="dense_b")

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.forward(x, training)[-1][1]

    def forward(self, x: tf.Tensor, training: bool) -> list[tuple[str, tf.Tensor, int]]:
        """Every stage's (name, output, parameter count): the layer table and the logits in one pass."""
        stages = []
        x = tf.nn.relu(tf.nn.conv2d(x, self.conv1_w, strides=1, padding="VALID") + self.conv1_b)
        stages.append(("conv2d+relu", x, _size(self.conv1_w, self.conv1_b)))
        x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
        stages.append(("max_pool2d", x, 0))
        x = tf.nn.relu(tf.nn.conv2d(x, self.conv2_w, strides=1, padding="VALID") + self.conv2_b)
        stages.append(("conv2d+relu", x, _size(self.conv2_w, self.conv2_b)))
        x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
        stages.append(("max_pool2d", x, 0))
        x = tf.reshape(x, [-1, 1600])
        stages.append(("reshape", x, 0))
        if training:
            x = tf.nn.dropout(x, rate=0.5)
        stages.append(("dropout", x, 0))
        x = tf.matmul(x, self.dense_w) + self.dense_b
        stages.append(("matmul+bias", x, _size(self.dense_w, self.dense_b)))
        return stages


class Adam:
    """Adam (Kingma & Ba) on raw variables, with Keras' defaults (beta 0.9/0.999, epsilon 1e-7)."""

    def __init__(self, variables: list[tf.Variable], learning_rate: float, beta1=0.9, beta2=0.999, epsilon=1e-7):
        self.lr, self.beta1, self.beta2, self.epsilon = learning_rate, beta1, beta2, epsilon
        self.m = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.v = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.t = tf.Variable(0.0, trainable=False)

    def apply(self, gradients: list[tf.Tensor], variables: list[tf.Variable]) -> None:
        self.t.assign_add(1.0)
        correction = tf.sqrt(1.0 - self.beta2**self.t) / (1.0 - self.beta1**self.t)
        for grad, var, m, v in zip(gradients, variables, self.m, self.v, strict=True):
            m.assign(self.beta1 * m + (1.0 - self.beta1) * grad)
            v.assign(self.beta2 * v + (1.0 - self.beta2) * tf.square(grad))
            var.assign_sub(self.lr * correction * m / (tf.sqrt(v) + self.epsilon))


class TapeBackend:
    """What both TensorFlow models share: the GradientTape loop, evaluation and the traced serving path.

    A subclass provides ``build()``, ``logits(x, training)``, ``variables`` and ``optimizer_step``.
    """

    framework = "tensorflow"

    def __init__(self):
        self.build()
        self._serve = None

    def train(self, data: TrainingData, config: TrainConfig, progress: Progress) -> list[EpochRecord]:
        """Shuffled ``tf.data`` batches through a ``tf.function`` train step under ``tf.GradientTape``."""
        keras.utils.set_random_seed(config.seed)
        self.build()  # initial weights from the seeded generator: same seed, same run
        if config.same_start:  # or the start every framework shares (servekit.weights)
            self.import_weights(initial_weights(config.seed))
        self._serve = None
        apply_gradients = self.make_optimizer(config.learning_rate)
        variables = self.variables

        @tf.function(input_signature=[IMAGE_SPEC, tf.TensorSpec([None], tf.int64)])
        def train_step(images, labels):
            with tf.GradientTape() as tape:
                logits = self.logits(images, training=True)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
            apply_gradients(tape.gradient(loss, variables), variables)
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1), labels), tf.float32))
            return loss, correct

        dataset = None if config.same_start else training_dataset(data, config)  # same_start: one per epoch
        steps = -(-len(data.train) // config.batch_size)
        x_val, y_val = to_model_input(data.validation.images), data.validation.labels
        history = []
        for epoch in range(1, config.epochs + 1):
            progress.begin_epoch(epoch, steps)
            started = time.perf_counter()
            loss_sum, correct_sum, seen = 0.0, 0.0, 0
            batches = dataset or training_dataset(data, config, epoch - 1)
            for step, (images, labels) in enumerate(batches, start=1):
                loss, correct = train_step(images, labels)
                count = int(labels.shape[0])
                loss_sum, correct_sum, seen = loss_sum + float(loss) * count, correct_sum + float(correct), seen + count
                progress.step(step, loss_sum / seen, correct_sum / seen)
            val = self.evaluate(x_val, y_val)
            record = EpochRecord(epoch, loss_sum / seen, correct_sum / seen, val.loss, val.accuracy,
                                 round(time.perf_counter() - started, 3))
            progress.end_epoch(record)
            history.append(record)
        return history

    train_step_source = train  # what GET /source shows as the training step (servekit.source)

    def first_batch(self, data: TrainingData, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, str]:
        """The first batch of the training ``tf.data`` pipeline for this seed: what the first step trains on."""
        keras.utils.set_random_seed(config.seed)  # as train() does: the shuffle also follows the global seed
        images, labels = next(iter(training_dataset(data, config)))
        order = "the shared order" if config.same_start else "shuffle"
        return images.numpy()[..., 0], labels.numpy(), f"tf.data (from_tensor_slices, {order}, batch)"

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> Metrics:
        """Mean cross-entropy and accuracy, in batches, without dropout."""
        loss_sum, correct = 0.0, 0
        for start in range(0, len(x), EVAL_BATCH):
            probabilities = self.predict(x[start : start + EVAL_BATCH])
            labels = y[start : start + EVAL_BATCH].astype(np.int64)
            picked = probabilities[np.arange(len(labels)), labels]
            loss_sum += float(-np.log(np.clip(picked, 1e-7, 1.0)).sum())
            correct += int((probabilities.argmax(1) == labels).sum())
        return Metrics(loss=loss_sum / len(x), accuracy=correct / len(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """A graph traced once for any batch size: softmax of the logits, no dropout. Its concrete function is
        called directly (a ``tf.function`` call re-binds its arguments every time: a quarter of a one-image call)."""
        if self._serve is None:
            self._serve = tf.function(lambda images: tf.nn.softmax(self.logits(images, training=False)),
                                      input_signature=[IMAGE_SPEC]).get_concrete_function()
        return self._serve(tf.convert_to_tensor(x, tf.float32)).numpy()


def training_dataset(data: TrainingData, config: TrainConfig, epoch: int = 0) -> tf.data.Dataset:
    """The training batches: shuffled anew every epoch from the run's seed, batched, prefetched. Under
    ``same_start``, epoch ``epoch`` of the order every framework shares instead (a dataset per epoch)."""
    images, labels = to_model_input(data.train.images), data.train.labels.astype(np.int64)
    if config.same_start:
        order = shared_order(config.seed, epoch, len(images))
        dataset = tf.data.Dataset.from_tensor_slices((images[order], labels[order]))
    else:
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(
            len(images), seed=config.seed, reshuffle_each_iteration=True)
    # No autotuning model: deleting an iterator waits for its model thread's next wake-up (seconds, doubling with
    # the iterator's age), and the loop deletes one every epoch; an in-memory pipeline has nothing for it to tune.
    # (The prefetch buffer still adapts, by the prefetch op's own autotuner.)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.batch(config.batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)


class NativeBackend(TapeBackend):
    """``tf-native``: ``tf.Variable`` weights and ``tf.nn`` ops, checkpointed with ``tf.train.Checkpoint``."""

    name = "tf-native"
    network_source = (glorot_uniform, NativeCNN)  # what GET /source shows as the network (servekit.source)

    def build(self) -> None:
        self.net = NativeCNN()

    @property
    def variables(self) -> list[tf.Variable]:
        return list(self.net.trainable_variables)

    def logits(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        return self.net(x, training=training)

    def make_optimizer(self, learning_rate: float):
        return Adam(self.variables, learning_rate).apply

    def layers(self) -> list[Layer]:
        stages = self.net.forward(tf.zeros([1, 28, 28, 1]), training=False)
        return [Layer(name, [None, *out.shape[1:]], params) for name, out, params in stages]

    def save(self, folder: Path) -> None:
        tf.train.Checkpoint(net=self.net).write(str(folder / "ckpt"))

    def load(self, folder: Path) -> None:
        self.build()
        self._serve = None
        tf.train.Checkpoint(net=self.net).read(str(folder / "ckpt")).assert_existing_objects_matched()

    def export_weights(self) -> Weights:
        """The variables are already in the canonical layout (HWIO kernels, an NHWC flatten before dense)."""
        return {name: variable.numpy() for name, variable in self._named_variables().items()}

    def import_weights(self, weights: Weights) -> None:
        weights = check_weights(weights)
        for name, variable in self._named_variables().items():
            variable.assign(weights[name])

    def _named_variables(self) -> dict[str, tf.Variable]:
        net = self.net
        return {"conv1/kernel": net.conv1_w, "conv1/bias": net.conv1_b, "conv2/kernel": net.conv2_w,
                "conv2/bias": net.conv2_b, "dense/kernel": net.dense_w, "dense/bias": net.dense_b}


class HybridBackend(TapeBackend):
    """``tf-hybrid``: Keras layers in a ``keras.Model``, trained by the hand-written tape loop."""

    name = "tf-hybrid"

    def build(self) -> None:
        self.model = keras.Sequential(
            [
                keras.Input(shape=(28, 28, 1)),
                keras.layers.Conv2D(32, 3, activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Conv2D(64, 3, activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Flatten(),
                keras.layers.Dropout(0.5),
                keras.layers.Dense(10),  # logits: the loop applies the softmax in its loss
            ],
            name="tf_hybrid",
        )

    network_source = build  # what GET /source shows as the network (servekit.source)

    @property
    def variables(self) -> list:
        return self.model.trainable_variables

    def logits(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        return self.model(x, training=training)

    def make_optimizer(self, learning_rate: float):
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        optimizer.build(self.variables)  # slots created eagerly, not inside the traced step
        return lambda gradients, variables: optimizer.apply(gradients, variables)

    def layers(self) -> list[Layer]:
        return keras_layer_table(self.model)

    def save(self, folder: Path) -> None:
        self.model.save_weights(folder / "model.weights.h5")

    def load(self, folder: Path) -> None:
        self.build()
        self._serve = None
        self.model.load_weights(folder / "model.weights.h5")

    def export_weights(self) -> Weights:
        return keras_export(self.model)

    def import_weights(self, weights: Weights) -> None:
        keras_import(self.model, weights)


def _size(*variables: tf.Variable) -> int:
    return int(sum(np.prod(v.shape) for v in variables))
