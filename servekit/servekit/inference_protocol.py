"""Open Inference Protocol (KServe v2 / Triton REST), JSON tensors, for every model.

So that standard clients such as ``tritonclient.http`` work unchanged.
"""

from __future__ import annotations

import numpy as np
from flask import Blueprint, jsonify, request

from .auth import inference
from .errors import BadRequest
from .inputs import json_body
from .serving import Serving
from .web_security import accepts_any_media_type

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"


def inference_protocol_blueprint(serving: Serving) -> Blueprint:
    """Routes under /v2 for ``serving``'s models (their model calls are counted by ``serving``'s batchers)."""
    v2 = Blueprint("v2", __name__, url_prefix="/v2")
    service = serving.service

    @v2.get("")
    def server_metadata():
        """Server metadata: name, version and protocol extensions."""
        return jsonify(name=f"{service.info.framework}-service", version=service.info.version, extensions=[])

    @v2.get("/health/live")
    def live():
        """Liveness: 200 while the process serves HTTP."""
        return jsonify(live=True)

    @v2.get("/health/ready")
    def ready():
        """Readiness: 200 when every model can serve, else 503."""
        is_ready = all(m.ready for m in service.models.values())
        return jsonify(ready=is_ready), 200 if is_ready else 503

    @v2.get("/models/<name>")
    def model_metadata(name: str):
        """Model metadata: platform, input and output tensors."""
        served = service.select(name)[0]
        kept = service.repository.versions(served.name)
        return jsonify(
            name=served.name,
            versions=[str(v) for v in kept] or ([str(served.version)] if served.version else []),
            serving_version=None if served.version is None else str(served.version),
            platform=f"{served.framework}_{service.info.version}",
            inputs=[{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 28, 28, 1]}],
            outputs=[{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, 10]}],
        )

    @v2.get("/models/<name>/ready")
    def model_ready(name: str):
        """Model readiness: 200 when trained and loaded, 503 before."""
        served = service.select(name)[0]
        return jsonify(name=served.name, ready=served.ready), 200 if served.ready else 503

    @v2.post("/models/<name>/infer")
    @accepts_any_media_type  # tritonclient sends no Content-Type
    @inference
    def infer(name: str):
        """Inference on an FP32 [N, 28, 28, 1] tensor; returns FP32 [N, 10] probabilities."""
        served = service.select(name)[0]
        with serving.incoming(served.name):
            body = json_body(request, required=True, any_content_type=True)
            if not isinstance(body.get("id", ""), str):
                raise BadRequest("'id' must be a string")
            x = _input_tensor(body, service.settings.max_infer_batch)
        result = serving.infer(served, x)
        probabilities = result.outputs
        response = {
            "model_name": served.name,
            "model_version": str(result.tag),
            "outputs": [
                {
                    "name": OUTPUT_NAME,
                    "datatype": "FP32",
                    "shape": list(probabilities.shape),
                    "data": probabilities.astype(np.float32).ravel().tolist(),
                }
            ],
        }
        if "id" in body:
            response["id"] = body["id"]
        return jsonify(response)

    return v2


def _input_tensor(body: dict, max_batch: int) -> np.ndarray:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f"'inputs' must hold exactly one tensor named '{INPUT_NAME}'")
    tensor = inputs[0]
    if tensor.get("name") != INPUT_NAME:
        raise BadRequest(f"unknown input {tensor.get('name')!r}; the model's input is '{INPUT_NAME}'")
    if tensor.get("datatype") != "FP32":
        raise BadRequest(f"input datatype must be FP32, got {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and shape[1:] == [28, 28, 1] and isinstance(shape[0], int)):
        raise BadRequest(f"input shape must be [N, 28, 28, 1], got {shape}")
    if not 1 <= shape[0] <= max_batch:
        raise BadRequest(f"batch size must be between 1 and {max_batch}, got {shape[0]}")
    try:
        raw = np.asarray(tensor.get("data"))
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise BadRequest(f"input data must be a (flat or nested) list of numbers: {exc}") from None
    if raw.dtype.kind not in "iuf":  # strings, booleans, nulls, ragged lists, integers beyond 64 bits
        raise BadRequest("input data must be numbers (no strings, booleans or nulls)")
    if raw.size != int(np.prod(shape)):
        raise BadRequest(f"input data has {raw.size} values; shape {shape} needs {int(np.prod(shape))}")
    data = raw.astype(np.float32).reshape(shape)
    # The models take MNIST-scaled pixels; far larger values overflow the network into NaN.
    if not (np.all(np.isfinite(data)) and data.min() >= 0.0 and data.max() <= 1.0):
        raise BadRequest("input data must be pixels scaled to 0..1")
    return data

