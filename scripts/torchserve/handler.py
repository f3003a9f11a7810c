"""TorchServe handler for ``scripts/bench --peer torchserve``: the torch service's own serving code in TorchServe.

The model archive ships ``services/torch/backend.py`` (the network, weight loading and ``predict``) beside this
file, the promoted version's ``weights.pt`` from the torch service's model repository, and ``bench_config.json``
(thread counts). Each upload is decoded by ``servekit.images.image_to_input``, the function the services use, so
TorchServe sees the same 28x28 input and runs the same ``TorchBackend.predict`` (``inference_mode``, softmax):
only the serving stack differs. Requests read the multipart field ``image`` (as the services do), or ``data``
or a raw body.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from servekit.errors import ApiError
from servekit.images import image_to_input


class MnistHandler:
    """One TorchBackend per TorchServe worker; a list of uploads in, one JSON answer per upload out."""

    def __init__(self):
        self.backend = None
        self.initialized = False

    def initialize(self, context):
        model_dir = Path(context.system_properties["model_dir"])
        config = json.loads((model_dir / "bench_config.json").read_text())
        torch.set_num_threads(config["intra_op_threads"])
        try:
            torch.set_num_interop_threads(config["inter_op_threads"])
        except RuntimeError:  # already set in this process
            pass
        from backend import TorchBackend  # services/torch/backend.py, shipped in the archive (model_dir)

        self.backend = TorchBackend()
        self.backend.load(model_dir)  # model_dir / "weights.pt", weights_only=True
        self.backend.predict(np.zeros((1, 28, 28, 1), np.float32))  # warm-up, as the service warms up
        self.initialized = True

    def handle(self, data, context):
        inputs, answers = [], [None] * len(data)
        for index, row in enumerate(data):
            try:
                inputs.append((index, image_to_input(bytes(_upload(row)))))
            except ApiError as exc:
                context.set_response_status(exc.status, exc.message, idx=index)
                answers[index] = {"error": exc.message}
        if inputs:
            probabilities = self.backend.predict(np.stack([x for _, x in inputs]))
            for (index, _), row in zip(inputs, probabilities, strict=True):
                answers[index] = {"model": "torch", "label": int(row.argmax()),
                                  "probabilities": [float(p) for p in row]}
        return answers


def _upload(row: dict) -> bytes:
    for key in ("image", "data", "body"):
        value = row.get(key)
        if value:
            return value
    raise ApiError("send the image in the multipart field 'image'", 400)
