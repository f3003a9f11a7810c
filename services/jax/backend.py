"""The JAX models: ``flax`` (Flax NNX, Optax, an ``nnx.jit`` train step, a Grain pipeline) and ``keras-jax``
(``keras-sequential``'s very network, servekit.keras_models, on Keras' JAX backend)."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "jax"  # before Keras is first imported: it reads its backend once

import functools  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import grain  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx, serialization  # noqa: E402

from servekit.backend import EpochRecord, Layer, Metrics, Progress, TrainConfig, TrainingData  # noqa: E402
from servekit.buckets import bucket_sizes, max_batch_from_env, run_in_buckets, warm_up_buckets  # noqa: E402
from servekit.keras_models import FreedMemoryKept, SequentialBackend  # noqa: E402
from servekit.memory import freed_memory_kept  # noqa: E402
from servekit.mnist import to_model_input  # noqa: E402
from servekit.weights import Weights, check_weights, initial_weights, shared_order  # noqa: E402

# Evaluation batches small enough that each program's buffers (with the patch tensors of conv_3x3) stay under the
# 64 MiB heaps of glibc's per-thread arenas, which XLA's threads allocate from: bigger blocks are mmap'ed and
# faulted in anew each batch. 6,000 validation images took 1.2 s in batches of 1,000 (660,000 page faults), 0.45 s
# in batches of 200 (none).
EVAL_BATCH = 200
WEIGHTS_FILE = "params.msgpack"


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling, stride 2, VALID (an odd last row and column dropped, as Keras' MaxPooling2D does), written
    as a reshape and a max: on XLA's CPU backend a third faster per epoch than ``nnx.max_pool``'s reduce_window
    (measured on this network: 30 s against 42 s for 54,000 images)."""
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def conv_3x3(conv: nnx.Conv, x: jax.Array) -> jax.Array:
    """``conv(x)`` (a 3x3 VALID convolution, stride 1, HWIO kernel, bias) computed as matrix products over the nine
    shifted windows of ``x``: the same layer, parameters and sums, which XLA's CPU backend runs on its matmul (dot)
    kernels instead of its convolution emitter. With two channels or more the windows are concatenated into one
    (N, H, W, 9 * C) patch tensor and multiplied by the kernel as a (9 * C, out) matrix; for the one-channel input
    the nine windows' products are summed (a 9-wide patch tensor makes a badly shaped dot). A training step
    measured 35 ms with ``nnx.Conv``'s lax.conv_general_dilated against 27 ms so (its weight gradients dominate:
    conv2's was 23 of a 70 ms forward+backward)."""
    kernel, bias = conv.kernel[...], conv.bias[...]
    height, width, channels, features = kernel.shape
    rows, columns = x.shape[1] - height + 1, x.shape[2] - width + 1
    windows = [x[:, i:i + rows, j:j + columns, :] for i in range(height) for j in range(width)]
    if channels == 1:
        out = sum(window @ kernel[i, j] for window, (i, j) in
                  zip(windows, [(i, j) for i in range(height) for j in range(width)], strict=True))
    else:  # (i, j, c) order: the HWIO kernel's own, reshaped
        out = jnp.concatenate(windows, axis=-1) @ kernel.reshape(height * width * channels, features)
    return out + bias


class ConvNet(nnx.Module):
    """conv32-pool-conv64-pool-dropout-dense10, channels last; returns logits (softmax is applied when serving)."""

    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 32, kernel_size=(3, 3), padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(32, 64, kernel_size=(3, 3), padding="VALID", rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.dense = nnx.Linear(1600, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        # ReLU after the pooling: ReLU is monotonic, so relu(max(...)) == max(relu(...)), forward and gradient
        # alike, on a quarter of the values (a steady epoch 10.4-10.8 s against 12.1-14.3 s here, alternating
        # runs of scripts/bench_training.py --models flax).
        x = nnx.relu(max_pool_2x2(conv_3x3(self.conv1, x)))
        x = nnx.relu(max_pool_2x2(conv_3x3(self.conv2, x)))
        x = x.reshape(x.shape[0], -1)  # (h, w, c) order: the canonical dense layout of servekit.weights
        return self.dense(self.dropout(x))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def train_step(graphdef: nnx.GraphDef, state: nnx.State, images: jax.Array, labels: jax.Array):
    """One Adam step on one batch as a pure function of the split (model, optimizer) state, which it returns
    updated (the Dropout RNG stream's count included: state carried through the step, not mutated from outside
    the trace), with the batch's loss and accuracy. The old state is donated: XLA writes the new one in place.
    (Flax's performance guide: ``jax.jit`` over ``nnx.split``/``nnx.merge`` instead of ``nnx.jit``'s graph
    traversal of every argument per call.)"""
    model, optimizer = nnx.merge(graphdef, state)

    def loss_fn(model):
        logits = model(images)
        return cross_entropy(logits, labels), logits

    (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss, (logits.argmax(-1) == labels).mean()


@nnx.jit
def eval_step(model: ConvNet, images: jax.Array, labels: jax.Array, weights: jax.Array):
    """Summed loss and correct answers of one (padded) batch: ``weights`` is 0 on the padding."""
    logits = model(images)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return (losses * weights).sum(), ((logits.argmax(-1) == labels) * weights).sum()


def grain_batches(count: int, batch_size: int, seed: int, epoch: int, same_start: bool) -> grain.MapDataset:
    """One epoch's batches of row indices: Grain shuffles with the run's seed (a new order each epoch, as Grain
    derives it from the seed and the epoch) and batches; under ``same_start`` the shared order instead."""
    if same_start:
        rows = grain.MapDataset.source(shared_order(seed, epoch, count))
    else:
        rows = grain.MapDataset.range(count).shuffle(seed=seed).repeat(epoch + 1)[epoch * count:]
    return rows.batch(batch_size)


class FlaxBackend:
    """The ``flax`` model."""

    name = "flax"
    framework = "jax"
    # What GET /source shows (servekit.source): the network with its helpers, the jitted step with its loss.
    network_source = (max_pool_2x2, conv_3x3, ConvNet)
    train_step_source = (cross_entropy, train_step)

    def __init__(self, seed: int = 0):
        self.model = ConvNet(nnx.Rngs(seed))
        self._serve = None

    def layers(self) -> list[Layer]:
        """The layer table, shapes traced through the module's own layers (no computation: ``jax.eval_shape``)."""
        m = self.model
        steps = [
            ("Conv", lambda x: nnx.relu(m.conv1(x)), m.conv1), ("MaxPool", max_pool_2x2, None),
            ("Conv", lambda x: nnx.relu(m.conv2(x)), m.conv2), ("MaxPool", max_pool_2x2, None),
            ("Flatten", lambda x: x.reshape(x.shape[0], -1), None), ("Dropout", lambda x: x, m.dropout),
            ("Linear", m.dense, m.dense),
        ]
        shape, table = jax.ShapeDtypeStruct((1, 28, 28, 1), jnp.float32), []
        for kind, step, module in steps:
            shape = jax.eval_shape(step, shape)
            params = sum(p.size for p in jax.tree.leaves(nnx.state(module, nnx.Param))) if module else 0
            table.append(Layer(kind, [None, *shape.shape[1:]], int(params)))
        return table

    def train(self, data: TrainingData, config: TrainConfig, progress: Progress) -> list[EpochRecord]:
        """Optax Adam through ``nnx.Optimizer``, one jitted pure step (``train_step``) per Grain batch."""
        self.model, self._serve = ConvNet(nnx.Rngs(config.seed)), None
        if config.same_start:
            self.import_weights(initial_weights(config.seed))
        optimizer = nnx.Optimizer(self.model, optax.adam(config.learning_rate), wrt=nnx.Param)
        with freed_memory_kept():
            return self._train(optimizer, data, config, progress)

    def _train(self, optimizer: nnx.Optimizer, data: TrainingData, config: TrainConfig,
               progress: Progress) -> list[EpochRecord]:
        x, y = to_model_input(data.train.images), data.train.labels.astype(np.int32)
        steps = -(-len(x) // config.batch_size)
        records = []
        for epoch in range(config.epochs):
            started = time.perf_counter()
            progress.begin_epoch(epoch + 1, steps)
            self.model.train()
            graphdef, state = nnx.split((self.model, optimizer))
            totals = {"loss": 0.0, "correct": 0.0}
            # Each step's loss is read once the next step is dispatched (JAX runs them asynchronously): reading it
            # at once would leave XLA idle while Python fetches the next batch and dispatches it.
            pending = None
            try:
                for number, rows in enumerate(grain_batches(len(x), config.batch_size, config.seed, epoch,
                                                            config.same_start), start=1):
                    state, loss, accuracy = train_step(graphdef, state, x[rows], y[rows])
                    if pending:
                        _report(progress, totals, config.batch_size, *pending)
                    pending = (number, len(rows), loss, accuracy)
                if pending:
                    _report(progress, totals, config.batch_size, *pending)
            finally:  # the model's own arrays were donated to the first step: it takes the last state back
                nnx.update((self.model, optimizer), state)
            validation = self.evaluate(to_model_input(data.validation.images), data.validation.labels)
            record = EpochRecord(epoch + 1, totals["loss"] / len(x), totals["correct"] / len(x), validation.loss,
                                 validation.accuracy, round(time.perf_counter() - started, 3))
            records.append(record)
            progress.end_epoch(record)
        self.model.eval()
        return records

    def first_batch(self, data: TrainingData, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, str]:
        """The Grain pipeline's first batch for this seed."""
        rows = next(iter(grain_batches(len(data.train), config.batch_size, config.seed, 0, config.same_start)))
        name = ("Grain MapDataset over the shared order (same_start), batched" if config.same_start
                else "Grain MapDataset: shuffle(seed), batch")
        return data.train.images[rows] / np.float32(255.0), data.train.labels[rows], name

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> Metrics:
        """Mean loss and accuracy in padded batches of EVAL_BATCH (one compiled shape)."""
        self.model.eval()
        total_loss, correct = 0.0, 0.0
        for start in range(0, len(x), EVAL_BATCH):
            images, labels = x[start:start + EVAL_BATCH], y[start:start + EVAL_BATCH].astype(np.int32)
            pad = EVAL_BATCH - len(images) if len(x) > EVAL_BATCH else 0
            weights = np.concatenate([np.ones(len(images), np.float32), np.zeros(pad, np.float32)])
            images = np.concatenate([images, np.zeros((pad, 28, 28, 1), np.float32)])
            labels = np.concatenate([labels, np.zeros(pad, np.int32)])
            loss, right = eval_step(self.model, images, labels, weights)
            total_loss, correct = total_loss + float(loss), correct + float(right)
        return Metrics(loss=total_loss / len(x), accuracy=correct / len(x))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """A jitted softmax over the module in eval mode, on padded batch buckets (servekit.buckets)."""
        if self._serve is None:
            self.model.eval()
            graphdef, state = nnx.split(self.model)
            # The state's leaves as a flat list: flattening the nnx.State on every call made a one-image call
            # 0.26 ms instead of 0.21.
            leaves, treedef = jax.tree.flatten(state)
            forward = jax.jit(lambda leaves, images: jax.nn.softmax(
                nnx.merge(graphdef, jax.tree.unflatten(treedef, leaves))(images)))
            sizes = bucket_sizes(max_batch_from_env())
            self._serve = lambda x: run_in_buckets(lambda batch: np.asarray(forward(leaves, batch), np.float32),
                                                   x, sizes)
        return self._serve(np.asarray(x, np.float32))

    def warm_up(self) -> None:
        """Compile every batch bucket before the version is swapped in: no request pays for XLA."""
        warm_up_buckets(self.predict, bucket_sizes(max_batch_from_env()))

    def save(self, folder: Path) -> None:
        """The parameters as ``flax.serialization`` msgpack."""
        (folder / WEIGHTS_FILE).write_bytes(serialization.msgpack_serialize(
            nnx.to_pure_dict(nnx.state(self.model, nnx.Param))))

    def load(self, folder: Path) -> None:
        state = nnx.state(self.model, nnx.Param)
        nnx.replace_by_pure_dict(state, serialization.msgpack_restore((folder / WEIGHTS_FILE).read_bytes()))
        nnx.update(self.model, state)
        self._serve = None

    def export_weights(self) -> Weights:
        """Flax keeps Keras' layout: HWIO kernels, a dense kernel over an (h, w, c) flatten."""
        m = self.model
        return {f"{name}/{part}": np.asarray(getattr(layer, part)[...])
                for name, layer in (("conv1", m.conv1), ("conv2", m.conv2), ("dense", m.dense))
                for part in ("kernel", "bias")}

    def import_weights(self, weights: Weights) -> None:
        weights = check_weights(weights)
        m = self.model
        for name, layer in (("conv1", m.conv1), ("conv2", m.conv2), ("dense", m.dense)):
            for part in ("kernel", "bias"):
                getattr(layer, part)[...] = jnp.asarray(weights[f"{name}/{part}"])
        self._serve = None


def _report(progress: Progress, totals: dict, batch_size: int, number: int, size: int, loss: jax.Array,
            accuracy: jax.Array) -> None:
    """One step's progress: the epoch's running mean loss and the step's accuracy (waits for the step)."""
    totals["loss"] += float(loss) * size
    totals["correct"] += float(accuracy) * size
    progress.step(number, totals["loss"] / (number * batch_size), float(accuracy))


class KerasJaxBackend(FreedMemoryKept, SequentialBackend):
    """``keras-jax``: the ``keras-sequential`` network, ``compile`` + ``fit``, on Keras' JAX backend. The step is
    Keras' own (jitted, its state donated); most of its time is XLA's CPU backward of MaxPooling2D (reduce_window's
    gradient, select_and_scatter) and of the convolutions."""

    name = "keras-jax"
