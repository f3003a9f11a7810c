"""The Flask app factory every framework service is built with.

``create_app([BackendA, BackendB], info)`` gives a service the whole contract of
DESIGN.md: health, models, training jobs, evaluation, prediction, the Open
Inference Protocol, Prometheus metrics and an OpenAPI document.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from .backend import Backend, FrameworkInfo
from .errors import ApiError
from .inference_protocol import inference_protocol_blueprint
from .inputs import json_body, optional_int, optional_str, predict_input, train_config
from .metrics import ServiceMetrics
from .observability import instrument
from .openapi import build_openapi, documented
from .schemas import (
    EVALUATE,
    EVALUATE_REQUEST,
    HEALTH,
    JOB,
    JOBS,
    MODELS,
    PREDICT,
    PREDICT_REQUEST,
    TRAIN_ACCEPTED,
    TRAIN_REQUEST,
)
from .service import ModelService
from .settings import Settings

log = logging.getLogger(__name__)

def install_error_handlers(app: Flask) -> None:
    """Every error becomes JSON ``{"error": ...}`` with the contract's status; never an HTML page."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return jsonify(error=exc.message), exc.status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        message = exc.description or exc.name
        if exc.code == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"the request is larger than the limit of {limit:,} bytes"
        return jsonify(error=message), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error=f"internal error: {type(exc).__name__}; see the service log"), 500


def create_app(backend_classes: list[type[Backend]], info: FrameworkInfo, settings: Settings | None = None) -> Flask:
    """A Flask app serving the given models of one framework."""
    settings = settings or Settings.from_env()
    service = ModelService(backend_classes, info, settings)
    metrics = ServiceMetrics()
    app = Flask(info.framework)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.extensions["model_service"] = service
    install_error_handlers(app)

    def record_inference(model: str, seconds: float, count: int) -> None:
        metrics.inference_seconds.labels(model).observe(seconds)
        metrics.predictions.labels(model).inc(count)

    app.register_blueprint(inference_protocol_blueprint(service, record_inference))

    instrument(app, metrics)

    @app.get("/health")
    @documented(response=HEALTH)
    def health():
        """Liveness plus what this service runs: framework, version, data hash, threads."""
        return jsonify(
            status="ok",
            framework=info.framework,
            framework_version=info.version,
            data_sha256=service.data.sha256 if service.data else None,
            data_error=service.data_error,
            threads=info.threads,
            versions=info.versions,
            models={name: served.ready for name, served in service.models.items()},
            training=service.jobs.active().job_id if service.jobs.active() else None,
        )

    @app.get("/models")
    @documented(response=MODELS)
    def models():
        """Every model: readiness, parameter count, layer table, last training and test accuracy."""
        return jsonify(models=[served.to_dict() for served in service.models.values()])

    @app.post("/train")
    @documented(request_body={"application/json": TRAIN_REQUEST}, response=TRAIN_ACCEPTED, status=202)
    def train():
        """Start a background training job for one model (``model``) or all of them in turn."""
        body = json_body(request)
        accepted = service.start_training(optional_str(body, "model"), train_config(body))
        job_id = accepted["job_id"]
        return jsonify(job_id=job_id, status_url=f"/train/{job_id}", status=accepted["status"]), 202

    @app.get("/train")
    @documented(response=JOBS)
    def list_jobs():
        """All training jobs this process remembers, newest first."""
        return jsonify(jobs=[job.to_dict() for job in reversed(service.jobs.jobs())])

    @app.get("/train/<job_id>")
    @documented(response=JOB)
    def job_status(job_id: str):
        """Status and progress of one training job."""
        return jsonify(service.jobs.get(job_id).to_dict())

    @app.post("/evaluate")
    @documented(request_body={"application/json": EVALUATE_REQUEST}, response=EVALUATE)
    def evaluate():
        """Test-split accuracy and loss of one (``model``) or every model."""
        body = json_body(request)
        limit = optional_int(body, "limit", 1, 10_000)
        return jsonify(results=service.evaluate(optional_str(body, "model"), limit))

    @app.post("/predict")
    @documented(request_body=PREDICT_REQUEST, response=PREDICT)
    def predict():
        """Predict one digit (uploaded image or JSON pixels) with every model, or ``?model=``."""
        x = predict_input(request)
        predictions = service.predict(x, request.args.get("model"))
        for p in predictions:
            record_inference(p["model"], p["inference_ms"] / 1000.0, 1)
        return jsonify(predictions=predictions)

    @app.get("/metrics")
    @documented(content="text/plain")
    def prometheus_metrics():
        """Prometheus text-format metrics."""
        active = service.jobs.active()
        metrics.training_epoch.set(active.epoch if active else 0)
        metrics.training_step.set(active.step if active else 0)
        for name, served in service.models.items():
            metrics.model_ready.labels(name).set(1 if served.ready else 0)
            if served.meta.get("test_accuracy") is not None:
                metrics.model_accuracy.labels(name).set(served.meta["test_accuracy"])
        states = {}
        for job in service.jobs.jobs():
            states[job.status] = states.get(job.status, 0) + 1
        for state in ("queued", "running", "succeeded", "failed"):
            metrics.training_jobs.labels(state).set(states.get(state, 0))
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    @app.get("/openapi.json")
    def openapi():
        """This service's OpenAPI 3 document, generated from its routes."""
        return jsonify(build_openapi(app, f"{info.framework} model service", info.version))

    return app
