"""Property tests of the request parsers: any JSON value either parses or is refused with a 4xx ApiError."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servekit.errors import ApiError
from servekit.images import pixels_to_input
from servekit.inference_protocol import _input_tensor
from servekit.inputs import TRAIN_FIELDS, train_config

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=30,
)
NUMBER = st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
ROW = st.lists(NUMBER | st.booleans() | st.text(max_size=3) | st.none(), min_size=27, max_size=29)


def parses_or_refuses(parse, value):
    """Call the parser; an error must be a client error, anything else fails the test."""
    try:
        return parse(value)
    except ApiError as exc:
        assert 400 <= exc.status < 500, exc
        return None


@settings(max_examples=300, deadline=None)
@given(JSON | st.lists(ROW, min_size=27, max_size=29))
def test_pixels_parse_or_are_refused(value):
    parsed = parses_or_refuses(pixels_to_input, value)
    if parsed is not None:
        assert parsed.shape == (28, 28, 1) and parsed.dtype == np.float32
        assert np.all((parsed >= 0) & (parsed <= 1))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(TRAIN_FIELDS)), JSON | NUMBER, max_size=5))
def test_training_settings_parse_or_are_refused(body):
    config = parses_or_refuses(train_config, body)
    if config is not None:
        for name, (kind, low, high) in TRAIN_FIELDS.items():
            value = getattr(config, name)
            assert value is None or (isinstance(value, kind) and low <= value <= high)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({"inputs": st.lists(st.fixed_dictionaries({
    "name": st.just("input") | st.text(max_size=3),
    "datatype": st.just("FP32") | st.text(max_size=3),
    "shape": st.just([1, 28, 28, 1]) | st.lists(st.integers(-2, 30), max_size=4),
    "data": st.lists(NUMBER | st.booleans() | st.text(max_size=2) | st.none(), max_size=800) | JSON,
}), max_size=2)}) | JSON)
def test_inference_tensors_parse_or_are_refused(body):
    tensor = parses_or_refuses(lambda b: _input_tensor(b if isinstance(b, dict) else {"inputs": b}, 64, None), body)
    if tensor is not None:
        assert tensor.dtype == np.float32 and tensor.shape[1:] == (28, 28, 1)
        assert np.all(np.isfinite(tensor))


@pytest.mark.parametrize("pixels", [
    [["0.5"] * 28] * 28,                      # strings are not numbers
    [[True] * 28] * 28,                       # nor are booleans
    [[10**400] + [0] * 27] + [[0] * 28] * 27,  # beyond float range
    [[float("nan")] * 28] * 28,
])
def test_pixels_refuse_what_is_not_a_pixel(pixels):
    with pytest.raises(ApiError) as refused:
        pixels_to_input(pixels)
    assert refused.value.status == 400


def test_a_real_input_tensor_round_trips():
    data = np.linspace(0, 1, 28 * 28).tolist()
    tensor = _input_tensor({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 28, 28, 1],
                                        "data": data}]}, 64, None)
    assert tensor.shape == (1, 28, 28, 1) and np.isclose(tensor.max(), 1.0)
