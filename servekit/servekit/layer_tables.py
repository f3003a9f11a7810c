"""Layer tables of Keras models, read by duck typing so that this core never imports a framework."""

from __future__ import annotations

from .backend import Layer


def keras_layer_table(model) -> list[Layer]:
    """Type, output shape and parameter count of each layer of a built Keras model, as ``summary()`` shows.

    The input placeholder (``InputLayer``, listed by functional models only) is left out.
    """
    return [
        Layer(type(layer).__name__, [None if d is None else int(d) for d in layer.output.shape], layer.count_params())
        for layer in model.layers
        if type(layer).__name__ != "InputLayer"
    ]
