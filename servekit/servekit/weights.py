"""One network, many frameworks: the weights in one framework-neutral layout, and the same initial weights.

The canonical layout is Keras' (channels last), by layer:

- ``conv1/kernel`` (3, 3, 1, 32) and ``conv2/kernel`` (3, 3, 32, 64): height, width, in, out (HWIO);
- ``dense/kernel`` (1600, 10): its rows in the order a channels-last (5, 5, 64) map is flattened, (h, w, c);
- ``conv1/bias`` (32,), ``conv2/bias`` (64,), ``dense/bias`` (10,).

A framework that works channels first (PyTorch: OIHW kernels, a (c, h, w) flatten before the dense layer)
transposes on the way in and out. Weights travel as a NumPy ``.npz`` archive.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

from .errors import BadRequest

SHAPES = {
    "conv1/kernel": (3, 3, 1, 32),
    "conv1/bias": (32,),
    "conv2/kernel": (3, 3, 32, 64),
    "conv2/bias": (64,),
    "dense/kernel": (1600, 10),
    "dense/bias": (10,),
}
Weights = dict[str, np.ndarray]


def initial_weights(seed: int) -> Weights:
    """Keras' default initialisation (Glorot uniform kernels, zero biases), drawn by NumPy from ``seed``.

    The same seed gives the same numbers in every service, so every framework can start from one point.
    """
    generator = np.random.default_rng(seed)
    weights = {}
    for name, shape in SHAPES.items():
        if name.endswith("/bias"):
            weights[name] = np.zeros(shape, np.float32)
            continue
        receptive = int(np.prod(shape[:-2])) if len(shape) == 4 else 1
        fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        weights[name] = generator.uniform(-limit, limit, shape).astype(np.float32)
    return weights


def check_weights(weights: Weights) -> Weights:
    """The weights as float32 arrays of the canonical shapes; 400 when a name or shape is wrong."""
    if set(weights) != set(SHAPES):
        raise BadRequest(f"weights must be exactly {', '.join(SHAPES)}; got {', '.join(sorted(weights))}")
    checked = {}
    for name, shape in SHAPES.items():
        array = np.asarray(weights[name])
        if array.shape != shape:
            raise BadRequest(f"{name} must have shape {list(shape)}, got {list(array.shape)}")
        if array.dtype.kind not in "fiu" or not np.all(np.isfinite(array)):
            raise BadRequest(f"{name} must hold finite numbers")
        checked[name] = array.astype(np.float32)
    return checked


def to_npz(weights: Weights) -> bytes:
    """The weights as the bytes of an ``.npz`` archive."""
    buffer = io.BytesIO()
    np.savez(buffer, **check_weights(weights))
    return buffer.getvalue()


def from_npz(data: bytes) -> Weights:
    """Weights read back from ``to_npz`` bytes (never unpickling anything); 400 when unreadable."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            weights = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise BadRequest(f"the weights are not a readable .npz archive: {exc}") from None
    return check_weights(weights)


def torch_dense_from_canonical(kernel: np.ndarray) -> np.ndarray:
    """(1600, 10) rows in (h, w, c) order -> a torch Linear weight (10, 1600) over a (c, h, w) flatten."""
    return kernel.reshape(5, 5, 64, 10).transpose(3, 2, 0, 1).reshape(10, 1600)


def torch_dense_to_canonical(weight: np.ndarray) -> np.ndarray:
    """A torch Linear weight (10, 1600) over a (c, h, w) flatten -> (1600, 10) rows in (h, w, c) order."""
    return weight.reshape(10, 64, 5, 5).transpose(2, 3, 1, 0).reshape(1600, 10)


def keras_export(model) -> Weights:
    """A Keras model of this network (its conv, conv and dense layers hold weights, in that order) -> canonical."""
    conv1, conv2, dense = _weighted_layers(model)
    return {name: np.asarray(value) for layer, prefix in ((conv1, "conv1"), (conv2, "conv2"), (dense, "dense"))
            for name, value in zip((f"{prefix}/kernel", f"{prefix}/bias"), layer.get_weights(), strict=True)}


def keras_import(model, weights: Weights) -> None:
    """Set a Keras model's conv, conv and dense layers from canonical weights (Keras' own layout)."""
    weights = check_weights(weights)
    for layer, prefix in zip(_weighted_layers(model), ("conv1", "conv2", "dense"), strict=True):
        layer.set_weights([weights[f"{prefix}/kernel"], weights[f"{prefix}/bias"]])


def _weighted_layers(model) -> list:
    layers = [layer for layer in model.layers if layer.get_weights()]
    if len(layers) != 3:
        raise ValueError(f"expected the conv, conv and dense layers to hold weights, found {len(layers)} layers")
    return layers


def shared_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """Under ``same_start``: the order every framework visits the ``count`` training images in, per epoch."""
    return np.random.default_rng([seed, epoch]).permutation(count)
