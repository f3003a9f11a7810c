"""Open Inference Protocol (KServe v2 / Triton REST), for every model.

Tensors travel as JSON or, with the binary tensor data extension, as raw little-endian bytes after the
JSON header (its length in the ``Inference-Header-Content-Length`` header), so that standard clients such
as ``tritonclient.http`` work unchanged, with their defaults.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
from flask import Blueprint, Request, Response, current_app, jsonify, request

from .auth import inference
from .errors import BadRequest
from .inputs import json_body
from .serving import Serving
from .web_security import accepts_any_media_type

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_MEDIA_TYPE = "application/octet-stream"  # what Triton answers with binary outputs
FP32_BYTES = 4
DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII only, and short enough that int() never refuses it
UNSUPPORTED_PARAMETERS = ("shared_memory_region", "classification")  # other Triton extensions


def inference_protocol_blueprint(serving: Serving) -> Blueprint:
    """Routes under /v2 for ``serving``'s models (their model calls are counted by ``serving``'s batchers)."""
    v2 = Blueprint("v2", __name__, url_prefix="/v2")
    service = serving.service

    @v2.get("")
    def server_metadata():
        """Server metadata: name, version and protocol extensions."""
        return jsonify(name=f"{service.info.framework}-service", version=service.info.version,
                       extensions=["binary_tensor_data"])

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
        """Inference on an FP32 [N, 28, 28, 1] tensor (JSON or binary data); returns FP32 [N, 10] probabilities."""
        served = service.select(name)[0]
        with serving.incoming(served.name):
            parsed = read_infer_request(request, service.settings.max_infer_batch)
        result = serving.infer(served, parsed.x)
        return infer_response(parsed, served.name, str(result.tag), result.outputs)

    return v2


@dataclass(frozen=True)
class InferRequest:
    """A parsed infer request: its JSON header, the input images, and how to send the probabilities back."""

    header: dict
    x: np.ndarray  # float32 (N, 28, 28, 1)
    binary_output: bool


def read_infer_request(req: Request, max_batch: int) -> InferRequest:
    """The request's JSON header and input tensor, its data as JSON or binary; a 400 for anything malformed."""
    header, binary = _split_body(req)
    if not isinstance(header.get("id", ""), str):
        raise BadRequest("'id' must be a string")
    binary_output = _binary_output(header)  # checked before the model runs, like the input
    return InferRequest(header, _input_tensor(header, max_batch, binary), binary_output)


def infer_response(parsed: InferRequest, model_name: str, model_version: str, probabilities: np.ndarray) -> Response:
    """The infer answer: the probabilities as JSON data, or as raw bytes after the JSON header."""
    probabilities = np.asarray(probabilities, dtype="<f4")
    output = {"name": OUTPUT_NAME, "datatype": "FP32", "shape": list(probabilities.shape)}
    response = {"model_name": model_name, "model_version": model_version, "outputs": [output]}
    if "id" in parsed.header:
        response["id"] = parsed.header["id"]
    if not parsed.binary_output:
        output["data"] = probabilities.ravel().tolist()
        return jsonify(response)
    tensor = probabilities.tobytes()
    output["parameters"] = {"binary_data_size": len(tensor)}
    header = current_app.json.dumps(response).encode()
    return Response(header + tensor, content_type=BINARY_MEDIA_TYPE, headers={HEADER_LENGTH: str(len(header))})


def _split_body(req: Request) -> tuple[dict, memoryview | None]:
    """The JSON header, and the bytes after it (None without ``Inference-Header-Content-Length``: all JSON)."""
    text = req.headers.get(HEADER_LENGTH)
    if text is None:
        return json_body(req, required=True, any_content_type=True), None
    body = req.get_data(cache=True)  # past MAX_UPLOAD_BYTES, a 413 before anything is read
    length = _header_length(text, len(body))
    try:
        header = json.loads(body[:length])
    except RecursionError:
        raise BadRequest("the JSON header is nested too deeply") from None
    except ValueError as exc:  # also UnicodeDecodeError
        raise BadRequest(f"the body's first {length:,} bytes ({HEADER_LENGTH}) are not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise BadRequest("the JSON header must be an object")
    return header, memoryview(body)[length:]


def _header_length(text: str, body_length: int) -> int:
    """``Inference-Header-Content-Length``: a whole number of bytes from 1 to the body's length."""
    text = text.strip()
    if not DIGITS.fullmatch(text):
        raise BadRequest(f"{HEADER_LENGTH} must be the JSON header's length in bytes, a whole number; "
                         f"got {text[:40]!r}")
    length = int(text)
    if not 1 <= length <= body_length:
        raise BadRequest(f"{HEADER_LENGTH} is {length:,}; it must be between 1 and the body's length, "
                         f"{body_length:,} bytes")
    return length


def _parameters(owner: dict, where: str) -> dict:
    """``owner``'s protocol ``parameters`` object ({} when absent); 400 for another type or an unsupported one."""
    parameters = owner.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"'parameters' of {where} must be an object")
    for name in UNSUPPORTED_PARAMETERS:
        if name in parameters:
            raise BadRequest(f"parameter {name!r} of {where} is not supported here "
                             "(only the binary tensor data extension is)")
    return parameters


def _flag(parameters: dict, name: str, where: str, default: bool) -> bool:
    value = parameters.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"parameter {name!r} of {where} must be true or false")
    return value


def _binary_output(header: dict) -> bool:
    """Whether the probabilities go back as binary data: the output's ``binary_data`` parameter when the
    request lists it, else the request's ``binary_data_output``, else JSON."""
    default = _flag(_parameters(header, "the request"), "binary_data_output", "the request", False)
    outputs = header.get("outputs")
    if outputs is None or outputs == []:
        return default
    if not (isinstance(outputs, list) and len(outputs) == 1 and isinstance(outputs[0], dict)):
        raise BadRequest(f"'outputs' must be a list of at most one output, named '{OUTPUT_NAME}'")
    if outputs[0].get("name") != OUTPUT_NAME:
        raise BadRequest(f"unknown output {outputs[0].get('name')!r}; the model's output is '{OUTPUT_NAME}'")
    where = f"output '{OUTPUT_NAME}'"
    return _flag(_parameters(outputs[0], where), "binary_data", where, default)


def _input_tensor(body: dict, max_batch: int, binary: memoryview | None) -> np.ndarray:
    """The input as float32 (N, 28, 28, 1) pixels in 0..1, from its JSON ``data`` or from ``binary``."""
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f"'inputs' must hold exactly one tensor named '{INPUT_NAME}'")
    tensor = inputs[0]
    if tensor.get("name") != INPUT_NAME:
        raise BadRequest(f"unknown input {tensor.get('name')!r}; the model's input is '{INPUT_NAME}'")
    if tensor.get("datatype") == "BYTES":
        raise BadRequest("BYTES tensors are not supported: the model's input is FP32 pixels")
    if tensor.get("datatype") != "FP32":
        raise BadRequest(f"input datatype must be FP32, got {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and len(shape) == 4 and shape[1:] == [28, 28, 1] and isinstance(shape[0], int)):
        raise BadRequest(f"input shape must be [N, 28, 28, 1], got {shape}")
    if not 1 <= shape[0] <= max_batch:
        raise BadRequest(f"batch size must be between 1 and {max_batch}, got {shape[0]}")
    size = _binary_data_size(tensor, binary)
    if size is not None:
        raw = _binary_data(tensor, shape, size, binary)
    elif binary:
        raise BadRequest(f"{len(binary):,} bytes follow the JSON header, but input '{INPUT_NAME}' has no "
                         "parameters.binary_data_size")
    else:
        raw = _json_data(tensor, shape)
    data = raw.astype(np.float32).reshape(shape)
    # The models take MNIST-scaled pixels; far larger values overflow the network into NaN.
    if not (np.all(np.isfinite(data)) and data.min() >= 0.0 and data.max() <= 1.0):
        raise BadRequest("input data must be pixels scaled to 0..1")
    return data



def _binary_data_size(tensor: dict, binary: memoryview | None) -> int | None:
    """The input's ``parameters.binary_data_size`` (None: its data is JSON); 400 when it cannot be one."""
    size = _parameters(tensor, f"input '{INPUT_NAME}'").get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadRequest(f"parameters.binary_data_size of input '{INPUT_NAME}' must be a whole number of bytes")
    if binary is None:
        raise BadRequest(f"input '{INPUT_NAME}' has parameters.binary_data_size, so the request needs the "
                         f"{HEADER_LENGTH} header: the JSON header's length, the tensor's bytes after it")
    if "data" in tensor:
        raise BadRequest(f"input '{INPUT_NAME}' has both 'data' and parameters.binary_data_size; send one")
    return size


def _binary_data(tensor: dict, shape: list[int], size: int, binary: memoryview) -> np.ndarray:
    """The input's little-endian float32 values: exactly the bytes after the header, as many as the shape says."""
    if size > len(binary):
        raise BadRequest(f"the binary data is truncated: input '{INPUT_NAME}' has binary_data_size {size:,}, "
                         f"but {len(binary):,} bytes follow the JSON header")
    if size < len(binary):
        raise BadRequest(f"{len(binary) - size:,} bytes more than the inputs' binary_data_size ({size:,}) "
                         "follow the JSON header")
    needed = int(np.prod(shape)) * FP32_BYTES
    if size != needed:
        raise BadRequest(f"input '{INPUT_NAME}' has {size:,} bytes of binary data; shape {shape} of FP32 "
                         f"needs {needed:,}")
    return np.frombuffer(binary, dtype="<f4")


def _json_data(tensor: dict, shape: list[int]) -> np.ndarray:
    """The input's JSON ``data``: numbers, flat or nested, as many as the shape says."""
    try:
        raw = np.asarray(tensor.get("data"))
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise BadRequest(f"input data must be a (flat or nested) list of numbers: {exc}") from None
    if raw.dtype.kind not in "iuf":  # strings, booleans, nulls, ragged lists, integers beyond 64 bits
        raise BadRequest("input data must be numbers (no strings, booleans or nulls)")
    if raw.size != int(np.prod(shape)):
        raise BadRequest(f"input data has {raw.size} values; shape {shape} needs {int(np.prod(shape))}")
    return raw
