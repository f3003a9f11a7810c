"""JSON schemas of the gateway's bodies, for its generated OpenAPI document."""

from servekit.schemas import (
    BOOLEAN,
    INTEGER,
    NULLABLE_NUMBER,
    NULLABLE_STRING,
    NUMBER,
    PIXELS,
    PROBABILITIES,
    STRING,
    TRAIN_REQUEST,
    array_of,
    obj,
)

MODEL_LIST = array_of(STRING)

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
}, {"input": PIXELS})

RUN_REQUEST = {**TRAIN_REQUEST, "properties": {**TRAIN_REQUEST["properties"], "models": MODEL_LIST,
                                               "parallel": BOOLEAN}}
RUN_ACCEPTED = obj({"run_id": STRING, "status_url": STRING, "status": STRING})
RUN_MODEL = obj({"model": STRING, "service": STRING, "status": STRING})
RUN = obj({"run_id": STRING, "status": STRING, "progress": NUMBER, "parallel": BOOLEAN, "config": {"type": "object"},
           "models": {"type": "object", "additionalProperties": RUN_MODEL}, "error": NULLABLE_STRING})
RUNS = obj({"runs": array_of(RUN)})

SELECTION = obj({}, {"models": MODEL_LIST, "limit": INTEGER})
EVALUATION_RECORD = obj({"evaluation_id": STRING, "created_at": NUMBER, "results": array_of({"type": "object"})})

BENCHMARK_REQUEST = obj({}, {"models": MODEL_LIST, "requests": INTEGER, "concurrency": INTEGER,
                             "max_seconds": NUMBER})
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
})
COMPARE = obj({"generated_at": NUMBER, "models": array_of(COMPARE_ROW)})
GATEWAY_HEALTH = obj({"status": STRING, "services": INTEGER, "services_up": INTEGER})
