"""JSON schemas of the request and response bodies, used by the OpenAPI document (and so by its tests).

Request schemas are exact: the fields, types, ranges and nullability that ``inputs.py`` accepts, and no
other field (``additionalProperties: false`` where unknown fields are refused). Response schemas name what
clients rely on and leave room for added fields. ``ROUTES`` completes the document for each view of this
package (see ``openapi.Route``).
"""

from __future__ import annotations

from .inputs import TRAIN_FIELDS
from .openapi import MODEL_NAME, OPTIONAL_MODEL_NAME, Route
from .settings import PROMOTION_POLICIES
from .tensor_body import TENSOR_MEDIA_TYPE

NUMBER = {"type": "number"}
INTEGER = {"type": "integer"}
STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
BINARY = {"type": "string", "format": "binary"}
NULLABLE_NUMBER = {"type": "number", "nullable": True}
NULLABLE_STRING = {"type": "string", "nullable": True}
NULLABLE_INTEGER = {"type": "integer", "nullable": True}
PROBABILITIES = {"type": "array", "items": NUMBER, "minItems": 10, "maxItems": 10}
PIXEL = {"type": "number", "minimum": 0, "maximum": 1}
PIXEL_ROW = {"type": "array", "minItems": 28, "maxItems": 28, "items": {"anyOf": [
    PIXEL, {"type": "array", "items": PIXEL, "minItems": 1, "maxItems": 1},  # [28][28][1], the model's shape
]}}
PIXELS = {"type": "array", "items": PIXEL_ROW, "minItems": 28, "maxItems": 28}


def obj(required: dict, optional: dict | None = None) -> dict:
    """An object schema with these required (and optional) properties; other properties allowed."""
    schema = {"type": "object", "properties": {**required, **(optional or {})}}
    if required:  # OpenAPI 3.0 wants a non-empty list, or none
        schema["required"] = list(required)
    return schema


def strict(required: dict, optional: dict | None = None) -> dict:
    """A request object schema: these properties only (the code refuses unknown fields with a 400)."""
    return {**obj(required, optional), "additionalProperties": False}


def nullable(schema: dict) -> dict:
    """The schema, or null (an optional field sent as null counts as absent)."""
    return {**schema, "nullable": True}


def array_of(schema: dict) -> dict:
    return {"type": "array", "items": schema}


LAYER = obj({"type": STRING, "output_shape": array_of({"type": "integer", "nullable": True}), "params": INTEGER})
EPOCH = obj({"epoch": INTEGER, "loss": NUMBER, "accuracy": NUMBER, "val_loss": NUMBER, "val_accuracy": NUMBER,
             "seconds": NUMBER})

# ---- requests ----
TRAIN_FIELD = {  # inputs.TRAIN_FIELDS as schemas; the total steps are bounded too (inputs.MAX_TRAIN_STEPS)
    name: {"type": "integer" if kind is int else "number", "minimum": low, "maximum": high}
    for name, (kind, low, high) in TRAIN_FIELDS.items()
}
TRAIN_SETTINGS = {name: nullable(schema) for name, schema in TRAIN_FIELD.items()}
TRAIN_SETTINGS["same_start"] = BOOLEAN  # every framework begins from the same initial weights
PROMOTE = nullable({"type": "string", "enum": [*PROMOTION_POLICIES, None]})  # a nullable enum lists null
TRAIN_REQUEST = strict({}, {"model": OPTIONAL_MODEL_NAME, **TRAIN_SETTINGS, "promote": PROMOTE,
                            "run_id": NULLABLE_STRING})
EVALUATE_LIMIT = nullable({"type": "integer", "minimum": 1, "maximum": 10_000})
EVALUATE_REQUEST = strict({}, {"model": OPTIONAL_MODEL_NAME, "limit": EVALUATE_LIMIT, "per_image": BOOLEAN})
PREDICT_REQUEST = {
    "multipart/form-data": obj({"image": BINARY}),
    "application/json": strict({"pixels": PIXELS}),
    **{f"image/{kind}": BINARY for kind in ("png", "jpeg", "gif", "bmp", "webp")},
    TENSOR_MEDIA_TYPE: BINARY,  # N raw float32 28x28 images (servekit.tensor_body)
}
TENSOR = obj({
    "name": {"type": "string", "enum": ["input"]},
    "datatype": {"type": "string", "enum": ["FP32"]},
    "shape": {"type": "array", "minItems": 4, "maxItems": 4, "items": {"type": "integer", "minimum": 1},
              "description": "[N, 28, 28, 1]; N up to MAX_INFER_BATCH"},
    "data": {"type": "array", "description": "N*784 pixels in 0..1, flat or nested"},
})
INFER_REQUEST = {
    **obj({"inputs": {"type": "array", "items": TENSOR, "minItems": 1, "maxItems": 1}}, {"id": STRING}),
    "example": {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": [0.0] * 784}]},
}

# ---- service responses ----
BYTES = {"type": "integer", "minimum": 0, "nullable": True}
MACHINE = obj({"cpu_model": NULLABLE_STRING, "cpu_count": NULLABLE_INTEGER, "cpu_affinity": NULLABLE_INTEGER,
               "memory_bytes": BYTES, "platform": STRING, "python": STRING})
MEMORY = obj({"rss_bytes": BYTES, "peak_rss_bytes": BYTES})  # the answering process's (gunicorn worker's)
HEALTH = obj({"status": STRING, "framework": STRING, "framework_version": STRING,
              "data_sha256": NULLABLE_STRING, "threads": {"type": "object"}},
             {"role": {"type": "string", "enum": ["all", "trainer", "server"]}, "served_by": STRING,
              "model_versions": {"type": "object"},
              "batching": obj({"max_batch": INTEGER, "window_ms": NUMBER, "enabled": BOOLEAN}),
              "machine": MACHINE, "memory": MEMORY})
MODEL = obj({"name": STRING, "ready": {"type": "boolean"}, "params": INTEGER, "layers": array_of(LAYER),
             "trained_at": NULLABLE_STRING, "test_accuracy": NULLABLE_NUMBER},
            {"history": array_of(EPOCH), "framework": STRING, "backend": STRING, "version": NULLABLE_INTEGER,
             "train_seconds": NULLABLE_NUMBER, "train_peak_rss_bytes": BYTES})
MODELS = obj({"models": array_of(MODEL)})
TRAIN_ACCEPTED = obj({"job_id": STRING, "status_url": STRING, "status": STRING})
JOB = obj({"job_id": STRING, "model": NULLABLE_STRING, "status": {"type": "string",
           "enum": ["queued", "running", "succeeded", "failed", "cancelled"]}, "epoch": INTEGER, "epochs": INTEGER,
           "step": INTEGER, "steps_per_epoch": INTEGER, "history": array_of(EPOCH), "error": NULLABLE_STRING})
JOBS = obj({"jobs": array_of(JOB)})
EVALUATION = obj({"model": STRING, "accuracy": NUMBER, "loss": NUMBER, "samples": INTEGER, "seconds": NUMBER},
                 {"model_version": NULLABLE_INTEGER, "labels": array_of(INTEGER), "predicted": array_of(INTEGER),
                  "confidence": array_of(NUMBER)})
PREDICTION = obj({"model": STRING, "label": {"type": "integer", "minimum": 0, "maximum": 9},
                  "probabilities": PROBABILITIES, "inference_ms": NUMBER},
                 {"framework": STRING, "model_version": NULLABLE_INTEGER, "served_by": STRING,
                  "batch_size": INTEGER, "queue_ms": NUMBER})
MODEL_NOT_READY = obj({"model": STRING, "error": STRING}, {"model_version": NULLABLE_INTEGER, "framework": STRING,
                                                           "served_by": STRING})
PREDICT = obj({"predictions": array_of({"oneOf": [PREDICTION, MODEL_NOT_READY]})})
EVALUATE = obj({"results": array_of({"oneOf": [EVALUATION, MODEL_NOT_READY]})})  # not trained: as in /predict
VERSION = obj({"version": INTEGER, "promoted": BOOLEAN}, {"test_accuracy": NULLABLE_NUMBER,
                                                          "created_at": NULLABLE_STRING})
VERSIONS = obj({"model": STRING, "promoted": NULLABLE_INTEGER, "versions": array_of(VERSION)},
               {"previous": NULLABLE_INTEGER, "serving": NULLABLE_INTEGER})
PROMOTED = obj({"model": STRING, "version": INTEGER}, {"previous": NULLABLE_INTEGER, "promoted_at": STRING})
SOURCE_BLOCK = obj({"file": STRING, "qualname": STRING, "first_line": {"type": "integer", "minimum": 1},
                   "last_line": {"type": "integer", "minimum": 1}, "lines": {"type": "integer", "minimum": 0},
                   "code": STRING}, {"qualnames": array_of(STRING)})
SOURCE = obj({"service": STRING, "models": {"type": "object", "additionalProperties": obj(
    {"network": nullable(SOURCE_BLOCK), "train_step": nullable(SOURCE_BLOCK)})}})

# ---- Open Inference Protocol responses ----
TENSOR_META = obj({"name": STRING, "datatype": STRING, "shape": array_of(INTEGER)})
SERVER_METADATA = obj({"name": STRING, "version": STRING, "extensions": array_of(STRING)})
MODEL_METADATA = obj({"name": STRING, "versions": array_of(STRING), "platform": STRING,
                      "inputs": array_of(TENSOR_META), "outputs": array_of(TENSOR_META)},
                     {"serving_version": NULLABLE_STRING})
SERVER_READY = obj({"ready": BOOLEAN})
MODEL_READY = obj({"name": STRING, "ready": BOOLEAN})
INFER = obj({"model_name": STRING, "model_version": STRING,
             "outputs": array_of(obj({**TENSOR_META["properties"], "data": array_of(NUMBER)}))}, {"id": STRING})

INDICES = {"type": "string", "pattern": r"^\d+(,\d+)*$", "description": "test-set indices, e.g. 3,17 (at most 100)"}

UNKNOWN_MODEL = {404: "unknown model"}
NOT_TRAINED = {503: "the model is not trained yet (or MNIST could not be loaded)"}

ROUTES = {
    "evaluate": Route(errors={**UNKNOWN_MODEL, 429: "evaluations are already running; see Retry-After",
                              **NOT_TRAINED}),
    "predict": Route(query={"model": {"schema": MODEL_NAME}}, errors={
        **UNKNOWN_MODEL, 415: "not an image in a supported format, nor JSON pixels",
        422: "no digit found in the image, or the model's output was not finite", **NOT_TRAINED}),
    "train": Route(errors={**UNKNOWN_MODEL, 409: "a training job is already queued or running",
                           503: "MNIST could not be loaded"}),
    "cancel_job": Route(errors={409: "the job has already finished"}),
    "test_images": Route(query={"indices": {"required": True, "schema": INDICES}},
                         errors={400: "indices missing, malformed, too many or out of range",
                                 503: "MNIST could not be loaded"}),
    "first_batch": Route(query={"model": {"schema": MODEL_NAME},
                                "seed": {"schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}},
                                "same_start": {"schema": {"type": "string", "enum": ["true", "false"]}}},
                         errors={400: "'seed' out of range, or 'same_start' not true or false", **UNKNOWN_MODEL,
                                 503: "MNIST could not be loaded"}),
    "refused": Route(status=None, errors={409: "not on this role: the message says where to go"}),
    "server_metadata": Route(response=SERVER_METADATA),
    "live": Route(response=obj({"live": BOOLEAN})),
    "ready": Route(response=SERVER_READY, responses={503: SERVER_READY}),
    "model_metadata": Route(response=MODEL_METADATA),
    "model_ready": Route(response=MODEL_READY, responses={503: MODEL_READY}),
    "infer": Route(request_body={"application/json": INFER_REQUEST}, response=INFER, errors={
        422: "the model's output was not finite", **NOT_TRAINED}),
    "weights": Route(errors=NOT_TRAINED),
    "parity": Route(errors={429: "a transplant is already running; see Retry-After", 503: "MNIST could not be loaded"}),
}
TEST_IMAGES = obj({"images": array_of(obj({"index": INTEGER, "label": INTEGER, "png": STRING}))})
WEIGHTS = obj({"model": STRING, "version": NULLABLE_INTEGER, "framework": STRING, "npz": STRING})
PARITY_REQUEST = strict({"weights": {"type": "string", "format": "byte", "minLength": 1}}, {"limit": EVALUATE_LIMIT})
PARITY = obj({"images": INTEGER, "labels": array_of(INTEGER),
              "results": array_of(obj({"model": STRING, "framework": STRING, "probabilities": STRING}))})
FIRST_BATCH = obj({"model": STRING, "framework": STRING, "pipeline": STRING, "seed": INTEGER, "batch_size": INTEGER,
                   "shape": array_of(INTEGER), "labels": array_of(INTEGER), "sha256": STRING, "png": STRING})
