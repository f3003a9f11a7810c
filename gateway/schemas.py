"""JSON schemas of the gateway's bodies, and ``ROUTES`` completing its generated OpenAPI document."""

from servekit.inputs import MAX_SEEDS
from servekit.openapi import MODEL_NAME, Route
from servekit.schemas import (
    BOOLEAN,
    EVALUATE_LIMIT,
    INTEGER,
    NULLABLE_NUMBER,
    NULLABLE_STRING,
    NUMBER,
    PIXELS,
    PROBABILITIES,
    PROMOTE,
    STRING,
    TRAIN_FIELD,
    TRAIN_SETTINGS,
    array_of,
    nullable,
    obj,
    strict,
)

from .benchmark import MAX_CONCURRENCY, MAX_REQUESTS

MODEL_LIST = nullable({"type": "array", "items": MODEL_NAME, "uniqueItems": True})  # null: every model

GATEWAY_PREDICTION = {
    "oneOf": [
        obj({"model": STRING, "framework": STRING, "label": INTEGER, "probabilities": PROBABILITIES,
             "inference_ms": NUMBER, "roundtrip_ms": NUMBER}),
        obj({"model": STRING, "error": STRING}),
    ]
}
GATEWAY_PREDICT = obj({
    "predictions": array_of(GATEWAY_PREDICTION),
    "consensus": obj({"label": INTEGER, "votes": INTEGER, "of": INTEGER}),
    "total_ms": NUMBER,
}, {"input": PIXELS, "batch": obj({"images": INTEGER, "queue_ms": NUMBER})})

SEEDS = nullable({"type": "array", "items": TRAIN_FIELD["seed"], "minItems": 1, "maxItems": MAX_SEEDS,
                  "uniqueItems": True, "description": "train every model once per seed; not together with 'seed'"})
RUN_REQUEST = strict({}, {"models": MODEL_LIST, **TRAIN_SETTINGS, "seeds": SEEDS, "promote": PROMOTE,
                          "parallel": BOOLEAN})
RUN_ACCEPTED = obj({"run_id": STRING, "status_url": STRING, "status": STRING})
RUN_MODEL = obj({"model": STRING, "service": STRING, "status": STRING})
RUN = obj({"run_id": STRING, "status": STRING, "progress": NUMBER, "parallel": BOOLEAN, "config": {"type": "object"},
           "models": {"type": "object", "additionalProperties": RUN_MODEL}, "error": NULLABLE_STRING})
RUNS = obj({"runs": array_of(RUN)})

SELECTION = strict({}, {"models": MODEL_LIST, "limit": EVALUATE_LIMIT})
EVALUATION_RECORD = obj({"evaluation_id": STRING, "created_at": NUMBER, "results": array_of({"type": "object"})})

BENCHMARK_REQUEST = strict({}, {
    "models": MODEL_LIST,
    "requests": nullable({"type": "integer", "minimum": 1, "maximum": MAX_REQUESTS}),
    "concurrency": nullable({"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY}),
    "max_seconds": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 600},
})
PERCENTILES = obj({"p50": NUMBER, "p95": NUMBER, "p99": NUMBER})
BENCHMARK_RESULT = obj({"model": STRING, "concurrency": INTEGER, "requests": INTEGER, "ok": INTEGER,
                        "errors": INTEGER, "throughput_rps": NUMBER}, {"latency_ms": PERCENTILES})
BENCHMARK = obj({"benchmark_id": STRING, "results": array_of(BENCHMARK_RESULT)})

SERVICE = obj({"name": STRING, "up": BOOLEAN, "models": array_of({"type": "object"})},
              {"framework": STRING, "framework_version": STRING, "error": STRING})
SERVICES = obj({"services": array_of(SERVICE)})

COMPARE_ROW = obj({
    "model": STRING, "framework": NULLABLE_STRING, "framework_version": NULLABLE_STRING,
    "params": {"type": "integer", "nullable": True},
    "training": obj({"total_seconds": NULLABLE_NUMBER, "first_epoch_seconds": NULLABLE_NUMBER,
                     "epoch_seconds": NULLABLE_NUMBER, "ms_per_step": NULLABLE_NUMBER}),
    "validation_accuracy": NULLABLE_NUMBER, "test_accuracy": NULLABLE_NUMBER,
    "serving": {**obj({"latency_ms": PERCENTILES, "throughput_rps": NUMBER}), "nullable": True},
}, {
    "seeds": array_of(nullable(INTEGER)), "accuracy_mean": NULLABLE_NUMBER, "accuracy_sd": NULLABLE_NUMBER,
    "accuracy_min": NULLABLE_NUMBER, "accuracy_max": NULLABLE_NUMBER, "epoch_seconds_mean": NULLABLE_NUMBER,
    "epoch_seconds_sd": NULLABLE_NUMBER,
    "ci95": nullable({"type": "array", "items": NUMBER, "minItems": 2, "maxItems": 2}),
})
VERDICT_PAIR = obj({"a": STRING, "b": STRING, "a_only": INTEGER, "b_only": INTEGER, "p_value": NUMBER,
                    "p_adjusted": NUMBER, "significant": BOOLEAN})
VERDICT_STATUS = {"type": "string", "enum": ["ready", "computing"]}
# Ready: the statistics; computing: {"status": "computing"} while they are computed in the background; null with
# fewer than two models. (The branches name no type, so that null passes them: OpenAPI 3.0's nullable.)
VERDICT = nullable({**obj({"status": VERDICT_STATUS}, {"pairs": array_of(VERDICT_PAIR), "summary": STRING}), "anyOf": [
    {"properties": {"status": {"enum": ["ready"]}}, "required": ["pairs", "summary"]},
    {"properties": {"status": {"enum": ["computing"]}}},
]})
COMPARE = obj({"generated_at": NUMBER, "models": array_of(COMPARE_ROW)}, {"verdict": VERDICT})
GATEWAY_HEALTH = obj({"status": STRING, "services": INTEGER, "services_up": INTEGER},
                     {"batching": obj({"max_batch": INTEGER, "window_ms": NUMBER, "enabled": BOOLEAN})})

UNKNOWN_MODELS = {404: "unknown model(s)"}
MODELS_UNKNOWN_YET = {503: "a service has not said which models it has yet (name them in 'models')"}
SERVICE_ANSWER = {404: "unknown model, or no trainer for its service", 502: "its service did not answer"}

ROUTES = {
    "index": Route(content="text/html", response={"type": "string"}),
    "live": Route(response=obj({"status": STRING})),
    "predict": Route(errors={415: "not an image in a supported format, nor JSON pixels",
                             422: "no digit found in the image", 502: "no service answered"}),
    "train": Route(errors={**UNKNOWN_MODELS, 409: "another run is still active", **MODELS_UNKNOWN_YET}),
    "list_runs": Route(query={"limit": {"schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                                        "description": "how many runs (1..1000, default 50)"}},
                       errors={400: "'limit' is not a whole number from 1 to 1000"}),
    "cancel_run": Route(errors={409: "the run has already finished"}),
    "compare_disagreements": Route(query={"limit": {"schema": {"type": "integer", "minimum": 1, "maximum": 100}}},
                                   errors={400: "'limit' is not a whole number from 1 to 100"}),
    "first_batches": Route(query={"seed": {"schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}},
                                  "same_start": {"schema": {"type": "string", "enum": ["true", "false"]}}},
                           errors={400: "'seed' out of range, or 'same_start' not true or false",
                                   429: "other first-batch computations are running; see Retry-After",
                                   **MODELS_UNKNOWN_YET}),
    "report_markdown": Route(query={"images": {
        "schema": {"type": "string", "enum": ["files", "inline"], "default": "files"},
        "description": "files: a zip of report.md and images/*.png (application/zip); inline: one Markdown file "
                       "with the images as data: URLs (text/markdown)"}},
        errors={400: "'images' is not 'files' or 'inline'"}),
    "model_versions": Route(errors=SERVICE_ANSWER),
    "promote_version": Route(errors={**SERVICE_ANSWER, 409: "its trainer refused (not a trainer)"}),
    "evaluate": Route(errors={**UNKNOWN_MODELS, 429: "evaluations are already running; see Retry-After",
                              **MODELS_UNKNOWN_YET}),
    "benchmark": Route(errors={**UNKNOWN_MODELS, 409: "a benchmark is already running", **MODELS_UNKNOWN_YET}),
    "parity": Route(errors={404: "unknown source model", 429: "evaluations are already running; see Retry-After",
                            502: "a service did not answer", 503: "the source model is not trained yet"}),
}
DISAGREEMENTS = obj({"models": array_of(STRING), "count": INTEGER, "disagreements": array_of(obj(
    {"index": INTEGER, "label": INTEGER, "predictions": {"type": "object"}}, {"image": NULLABLE_STRING}))},
    {"status": VERDICT_STATUS})
PARITY_REQUEST = strict({"source": MODEL_NAME}, {"limit": EVALUATE_LIMIT})
PARITY_TARGET = obj({"model": STRING, "framework": STRING, "max_abs_diff": NUMBER, "agreement": NUMBER,
                     "accuracy": NUMBER})
PARITY_ANSWER = obj({"source": STRING, "images": INTEGER, "max_abs_diff": NUMBER, "within_tolerance": BOOLEAN,
                     "targets": array_of(PARITY_TARGET)}, {"source_version": nullable(INTEGER), "tolerance": NUMBER})
FIRST_BATCH_ENTRY = obj({"model": STRING, "service": STRING}, {
    "framework": STRING, "pipeline": STRING, "sha256": STRING, "labels": array_of(INTEGER),
    "image": STRING, "error": STRING})
FIRST_BATCHES = obj({"seed": INTEGER, "same_start": BOOLEAN, "batches": array_of(FIRST_BATCH_ENTRY)})
