"""The framework-neutral weight layout: archive round trips, checks, the shared initialisation, flatten orders."""

from __future__ import annotations

import numpy as np
import pytest

from servekit.errors import BadRequest
from servekit.weights import (
    SHAPES,
    from_npz,
    initial_weights,
    to_npz,
    torch_dense_from_canonical,
    torch_dense_to_canonical,
)


def test_the_same_seed_gives_the_same_start_and_keras_bounds():
    first, again, other = initial_weights(7), initial_weights(7), initial_weights(8)
    assert all(np.array_equal(first[n], again[n]) for n in SHAPES)
    assert not np.array_equal(first["conv1/kernel"], other["conv1/kernel"])
    assert sum(w.size for w in first.values()) == 34_826
    limit = np.sqrt(6.0 / (9 * 32 + 9 * 64))  # Glorot uniform for conv2: fan in 3*3*32, fan out 3*3*64
    assert np.abs(first["conv2/kernel"]).max() <= limit and np.abs(first["conv2/kernel"]).max() > 0.9 * limit
    assert not first["dense/bias"].any()


def test_archives_round_trip_exactly():
    weights = initial_weights(3)
    back = from_npz(to_npz(weights))
    assert all(np.array_equal(weights[n], back[n]) and back[n].dtype == np.float32 for n in SHAPES)


@pytest.mark.parametrize("broken", [
    b"not an archive",
    "missing",
    "wrong shape",
    "not finite",
])
def test_bad_weights_are_a_400(broken):
    weights = initial_weights(0)
    if broken == "missing":
        del weights["dense/bias"]
        data = _raw_npz(weights)
    elif broken == "wrong shape":
        weights["conv1/kernel"] = np.zeros((32, 1, 3, 3), np.float32)
        data = _raw_npz(weights)
    elif broken == "not finite":
        weights["dense/kernel"][0, 0] = np.nan
        data = _raw_npz(weights)
    else:
        data = broken
    with pytest.raises(BadRequest):
        from_npz(data)


def _raw_npz(weights) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **weights)
    return buffer.getvalue()


def test_the_dense_layer_sees_the_same_features_in_either_flatten_order():
    rng = np.random.default_rng(1)
    feature_map = rng.normal(size=(5, 5, 64)).astype(np.float32)  # (h, w, c), as channels-last frameworks hold it
    kernel = rng.normal(size=(1600, 10)).astype(np.float32)
    keras_out = feature_map.reshape(-1) @ kernel
    torch_weight = torch_dense_from_canonical(kernel)
    torch_out = torch_weight @ feature_map.transpose(2, 0, 1).reshape(-1)  # torch flattens (c, h, w)
    assert np.allclose(keras_out, torch_out, atol=1e-4)
    assert np.array_equal(torch_dense_to_canonical(torch_weight), kernel)
