"""JSON schemas of the request and response bodies, used by the OpenAPI document (and so by its tests)."""

from __future__ import annotations

NUMBER = {"type": "number"}
INTEGER = {"type": "integer"}
STRING = {"type": "string"}
BOOLEAN = {"type": "boolean"}
NULLABLE_NUMBER = {"type": "number", "nullable": True}
NULLABLE_STRING = {"type": "string", "nullable": True}
PROBABILITIES = {"type": "array", "items": NUMBER, "minItems": 10, "maxItems": 10}
PIXELS = {"type": "array", "items": {"type": "array", "items": NUMBER}, "minItems": 28, "maxItems": 28}


def obj(required: dict, optional: dict | None = None) -> dict:
    """An object schema with these required (and optional) properties."""
    schema = {"type": "object", "properties": {**required, **(optional or {})}}
    if required:  # OpenAPI 3.0 wants a non-empty list, or none
        schema["required"] = list(required)
    return schema


def array_of(schema: dict) -> dict:
    return {"type": "array", "items": schema}


LAYER = obj({"type": STRING, "output_shape": array_of({"type": "integer", "nullable": True}), "params": INTEGER})
EPOCH = obj({"epoch": INTEGER, "loss": NUMBER, "accuracy": NUMBER, "val_loss": NUMBER, "val_accuracy": NUMBER,
             "seconds": NUMBER})

# ---- requests ----
TRAIN_REQUEST = obj({}, {
    "model": STRING, "epochs": {"type": "integer", "minimum": 1}, "batch_size": {"type": "integer", "minimum": 1},
    "learning_rate": NUMBER, "seed": INTEGER, "train_limit": {"type": "integer", "minimum": 1},
    "promote": {"type": "string", "enum": ["always", "if_better", "never"]}, "run_id": STRING,
})
EVALUATE_REQUEST = obj({}, {"model": STRING, "limit": {"type": "integer", "minimum": 1}})
PREDICT_REQUEST = {
    "multipart/form-data": obj({"image": {"type": "string", "format": "binary"}}),
    "application/json": obj({"pixels": PIXELS}),
}

# ---- service responses ----
HEALTH = obj({"status": STRING, "framework": STRING, "framework_version": STRING,
              "data_sha256": NULLABLE_STRING, "threads": {"type": "object"}},
             {"role": {"type": "string", "enum": ["all", "trainer", "server"]}, "served_by": STRING,
              "model_versions": {"type": "object"}})
NULLABLE_INTEGER = {"type": "integer", "nullable": True}
MODEL = obj({"name": STRING, "ready": {"type": "boolean"}, "params": INTEGER, "layers": array_of(LAYER),
             "trained_at": NULLABLE_STRING, "test_accuracy": NULLABLE_NUMBER},
            {"history": array_of(EPOCH), "framework": STRING, "version": NULLABLE_INTEGER})
MODELS = obj({"models": array_of(MODEL)})
TRAIN_ACCEPTED = obj({"job_id": STRING, "status_url": STRING, "status": STRING})
JOB = obj({"job_id": STRING, "model": NULLABLE_STRING, "status": {"type": "string",
           "enum": ["queued", "running", "succeeded", "failed", "cancelled"]}, "epoch": INTEGER, "epochs": INTEGER,
           "step": INTEGER, "steps_per_epoch": INTEGER, "history": array_of(EPOCH), "error": NULLABLE_STRING})
JOBS = obj({"jobs": array_of(JOB)})
EVALUATION = obj({"model": STRING, "accuracy": NUMBER, "loss": NUMBER, "samples": INTEGER, "seconds": NUMBER})
EVALUATE = obj({"results": array_of(EVALUATION)})
PREDICTION = obj({"model": STRING, "label": {"type": "integer", "minimum": 0, "maximum": 9},
                  "probabilities": PROBABILITIES, "inference_ms": NUMBER},
                 {"framework": STRING, "model_version": NULLABLE_INTEGER, "served_by": STRING})
MODEL_NOT_READY = obj({"model": STRING, "error": STRING}, {"model_version": NULLABLE_INTEGER, "framework": STRING,
                                                           "served_by": STRING})
PREDICT = obj({"predictions": array_of({"oneOf": [PREDICTION, MODEL_NOT_READY]})})
VERSION = obj({"version": INTEGER, "promoted": BOOLEAN}, {"test_accuracy": NULLABLE_NUMBER,
                                                          "created_at": NULLABLE_STRING})
VERSIONS = obj({"model": STRING, "promoted": NULLABLE_INTEGER, "versions": array_of(VERSION)},
               {"previous": NULLABLE_INTEGER, "serving": NULLABLE_INTEGER})
PROMOTED = obj({"model": STRING, "version": INTEGER}, {"previous": NULLABLE_INTEGER, "promoted_at": STRING})
