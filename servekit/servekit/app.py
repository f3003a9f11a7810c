"""The Flask app factory every framework service is built with.

``create_app([BackendA, BackendB], info, settings)`` gives a service the
contract of docs/api.md for its ``ROLE``:

- ``server``: /predict, /evaluate, the Open Inference Protocol, from the
  promoted versions of the model repository, hot-swapped as they change;
- ``trainer``: training jobs that write new versions, promotion and rollback;
- ``all``: both in one process (``make run``, the contract tests).

Every role answers /health, /models, /models/<name>/versions, /source, /metrics
and /openapi.json. A route of the other role answers 409 with where to go instead.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
from flask import Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from .auth import inference, install_auth, load_auth
from .backend import Backend, FrameworkInfo, TrainConfig
from .batching import describe_batching
from .errors import ApiError, Conflict
from .images import grid_png_base64, png_base64
from .inference_protocol import inference_protocol_blueprint
from .inputs import (
    TRAIN_REQUEST_FIELDS,
    index_list,
    json_body,
    optional_bool,
    optional_int,
    optional_str,
    predict_input,
    promotion_policy,
    query_bool,
    query_int,
    train_config,
)
from .limits import Slots, install_rate_limit
from .machine import machine_facts
from .memory import resident_memory
from .metrics import ServiceMetrics
from .models import describe
from .observability import instrument
from .openapi import build_openapi, documented
from .parity import parity_blueprint
from .schemas import (
    EVALUATE,
    EVALUATE_REQUEST,
    FIRST_BATCH,
    HEALTH,
    JOB,
    JOBS,
    MODELS,
    PREDICT,
    PREDICT_REQUEST,
    PROMOTED,
    SOURCE,
    TEST_IMAGES,
    TRAIN_ACCEPTED,
    TRAIN_REQUEST,
    VERSIONS,
)
from .service import ModelService
from .serving import Serving
from .settings import Settings
from .training import Trainer
from .watcher import RepositoryWatcher
from .web_security import accepts_any_media_type, install_web_security

log = logging.getLogger(__name__)
MAX_TEST_IMAGES = 100  # per /data/test request


class StrictJSONProvider(DefaultJSONProvider):
    """JSON answers are strict JSON: NaN and Infinity are a server error, never a body clients choke on."""

    def dumps(self, obj, **kwargs):
        return super().dumps(obj, allow_nan=False, **kwargs)


def install_error_handlers(app: Flask) -> None:
    """Every error becomes JSON ``{"error": ...}`` with the contract's status; never an HTML page.

    Also makes every JSON answer strict (no NaN or Infinity).
    """
    app.json = StrictJSONProvider(app)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return jsonify(error=exc.message), exc.status, exc.headers

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        message = exc.description or exc.name
        if exc.code == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"the request is larger than the limit of {limit:,} bytes"
        elif exc.code == 429:
            message = f"too many requests from you (limit {exc.description}); wait and try again"
        return jsonify(error=message), exc.code

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error=f"internal error: {type(exc).__name__}; see the service log"), 500


def create_app(backend_classes: list[type[Backend]], info: FrameworkInfo, settings: Settings | None = None) -> Flask:
    """A Flask app serving (and/or training, by ``settings.role``) the given models of one framework."""
    settings = settings or Settings.from_env()
    service = ModelService(backend_classes, info, settings)
    metrics = ServiceMetrics()
    app = Flask(info.framework)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.extensions["model_service"] = service
    install_error_handlers(app)
    instrument(app, metrics)  # first: a request refused by the checks below still gets its id, count and log line
    install_web_security(app, settings.allowed_hosts)
    auth = load_auth()
    if auth.generated:
        log.warning("no API_TOKEN or API_TOKEN_FILE: training and evaluation need the generated token %s; give "
                    "the gateway the same one as SERVICE_TOKEN", auth.token)
    install_auth(app, auth)

    serving = watcher = trainer = None
    if settings.serves:
        serving = Serving(service, on_batch=metrics.observe_model_call)
        watcher = RepositoryWatcher(service.repository, service.models, settings.model_poll_s)
        watcher.sync()  # serve what is promoted from the first request on
        watcher.start()
    if settings.trains:
        # In one process (ROLE=all) a promotion is installed at once instead of at the next poll.
        trainer = Trainer(service, on_promoted=watcher.sync if watcher else None)

    _register_common_routes(app, service, metrics, trainer, watcher)
    if serving:
        _register_serving_routes(app, service, serving)
        install_rate_limit(app, settings.rate_limit)
    else:
        _refuse(app, ["/predict", "/evaluate"], "POST", f"this is the {info.framework} trainer; predictions and "
                "evaluations are answered by the server replicas (ROLE=server)")
    if trainer:
        _register_training_routes(app, trainer)
    else:
        where = f" at {settings.trainer_url}" if settings.trainer_url else " (ROLE=trainer)"
        message = f"this is a {info.framework} server replica; training and promotion run on the trainer{where}"
        _refuse(app, ["/train", "/train/<job_id>/cancel", "/models/<name>/versions/<int:version>/promote"],
                "POST", message)
        _refuse(app, ["/train", "/train/<job_id>"], "GET", message)
        _refuse(app, ["/train/<job_id>"], "DELETE", message)
    return app


def _register_common_routes(app: Flask, service: ModelService, metrics: ServiceMetrics, trainer: Trainer | None,
                            watcher: RepositoryWatcher | None) -> None:
    info, settings = service.info, service.settings

    @app.get("/health")
    @documented(response=HEALTH)
    def health():
        """Liveness and what this service runs: role, framework, data hash, threads, models, machine, memory."""
        active = trainer.jobs.active() if trainer else None
        entries = _model_entries(service, watcher)
        return jsonify(
            status="ok",
            role=settings.role,
            served_by=settings.served_by,
            framework=info.framework,
            framework_version=info.version,
            data_sha256=service.data.sha256 if service.data else None,
            data_error=service.data_error,
            threads={**info.threads, "workers": settings.workers, "cpu_limit": settings.cpu_limit},
            batching=describe_batching(settings.max_batch, settings.batch_window_ms),
            versions=info.versions,
            models={entry["name"]: entry["ready"] for entry in entries},
            model_versions={entry["name"]: entry["version"] for entry in entries},
            training=active.job_id if active else None,
            machine=machine_facts(),
            memory=resident_memory(),  # the answering gunicorn worker's
        )

    @app.get("/models")
    @documented(response=MODELS)
    def models():
        """Every model: readiness, version, parameter count, layer table, last training and test accuracy."""
        return jsonify(models=_model_entries(service, watcher))

    @app.get("/models/<name>/versions")
    @documented(response=VERSIONS)
    def versions(name: str):
        """The kept versions of a model, newest first, with their meta, and which one is promoted."""
        served = service.select(name)[0]
        listing = service.repository.describe(served.name)
        return jsonify({**listing, "serving": served.version if watcher else None})

    @app.get("/source")
    @documented(response=SOURCE)
    def source():
        """The code that defines each model's network and its training step, as this process runs it."""
        return jsonify(service=settings.service_name, models={name: served.source
                                                              for name, served in service.models.items()})

    @app.get("/metrics")
    @documented(content="text/plain")
    def prometheus_metrics():
        """Prometheus text-format metrics (of every gunicorn worker when a server runs several)."""
        active = trainer.jobs.active() if trainer else None
        metrics.training_epoch.set(active.epoch if active else 0)
        metrics.training_step.set(active.step if active else 0)
        for entry in _model_entries(service, watcher):
            metrics.model_ready.labels(entry["name"]).set(1 if entry["ready"] else 0)
            if entry["version"] is not None:
                metrics.model_version.labels(entry["name"]).set(entry["version"])
            if entry.get("test_accuracy") is not None:
                metrics.model_accuracy.labels(entry["name"]).set(entry["test_accuracy"])
        if trainer:
            states = {}
            for job in trainer.jobs.jobs():
                states[job.status] = states.get(job.status, 0) + 1
            for state in ("queued", "running", "succeeded", "failed", "cancelled"):
                metrics.training_jobs.labels(state).set(states.get(state, 0))
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    @app.get("/data/test")
    @documented(response=TEST_IMAGES)
    def test_images():
        """MNIST test images by index (``?indices=3,17``, at most 100): label and PNG (base64) of each."""
        indices = index_list(request.args.get("indices", ""), len(service.require_data().test), MAX_TEST_IMAGES)
        test = service.require_data().test
        return jsonify(images=[{"index": i, "label": int(test.labels[i]), "png": png_base64(test.images[i])}
                               for i in indices])

    @app.get("/data/first-batch")
    @documented(response=FIRST_BATCH)
    def first_batch():
        """The first training batch the model's own pipeline yields (``?model=``, ``?seed=``, ``?same_start=``),
        as a grid and a hash."""
        served = service.select(request.args.get("model") or next(iter(service.models)))[0]
        seed = query_int(request.args, "seed", 0, 2**31 - 1, default=TrainConfig.seed)
        config = TrainConfig(seed=seed, same_start=query_bool(request.args, "same_start"))
        images, labels, pipeline = served.backend_class().first_batch(service.training_data(), config)
        images = np.ascontiguousarray(images, dtype="<f4")
        return jsonify(model=served.name, framework=served.framework, pipeline=pipeline, seed=seed,
                       batch_size=config.batch_size, shape=list(images.shape), labels=np.asarray(labels).tolist(),
                       sha256=hashlib.sha256(images.tobytes()).hexdigest(), png=grid_png_base64(images))

    @app.get("/openapi.json")
    def openapi():
        """This service's OpenAPI 3 document, generated from its routes."""
        return jsonify(build_openapi(app, f"{info.framework} model service ({settings.role})", info.version))


def _register_serving_routes(app: Flask, service: ModelService, serving: Serving) -> None:
    app.register_blueprint(inference_protocol_blueprint(serving))
    app.register_blueprint(parity_blueprint(service))
    evaluations = Slots(service.settings.max_evaluations, "evaluations are")

    @app.post("/evaluate")
    @documented(request_body={"application/json": EVALUATE_REQUEST}, response=EVALUATE)
    def evaluate():
        """Test-split accuracy and loss of one (``model``) or every model's serving version."""
        body = json_body(request, allowed={"model", "limit", "per_image"})
        limit = optional_int(body, "limit", 1, 10_000)
        per_image = optional_bool(body, "per_image")
        with evaluations.take():  # each is a pass over the test set; they would only slow each other down
            return jsonify(results=serving.evaluate(optional_str(body, "model"), limit, per_image))

    @app.post("/predict")
    @documented(request_body=PREDICT_REQUEST, response=PREDICT)
    @accepts_any_media_type
    @inference
    def predict():
        """Predict one digit (uploaded image or JSON pixels) with every model, or ``?model=``."""
        model = request.args.get("model")
        with serving.incoming(model):
            x = predict_input(request, max_images=service.settings.max_infer_batch)
        return jsonify(predictions=serving.predict(x, model))


def _register_training_routes(app: Flask, trainer: Trainer) -> None:
    @app.post("/train")
    @documented(request_body={"application/json": TRAIN_REQUEST}, response=TRAIN_ACCEPTED, status=202)
    def train():
        """Start a background training job for one model (``model``) or all of them in turn.

        ``promote``: ``always`` (default), ``if_better`` or ``never``.
        """
        body = json_body(request, allowed=TRAIN_REQUEST_FIELDS)
        accepted = trainer.start_training(
            optional_str(body, "model"), train_config(body), promotion_policy(body), optional_str(body, "run_id"),
        )
        job_id = accepted["job_id"]
        return jsonify(job_id=job_id, status_url=f"/train/{job_id}", status=accepted["status"]), 202

    @app.get("/train")
    @documented(response=JOBS)
    def list_jobs():
        """All training jobs this process remembers, newest first."""
        return jsonify(jobs=[job.to_dict() for job in reversed(trainer.jobs.jobs())])

    @app.get("/train/<job_id>")
    @documented(response=JOB)
    def job_status(job_id: str):
        """Status and progress of one training job."""
        return jsonify(trainer.jobs.get(job_id).to_dict())

    @app.post("/train/<job_id>/cancel")
    @app.delete("/train/<job_id>")
    @documented(response=JOB, status=202)
    def cancel_job(job_id: str):
        """Stop a queued or running job at its next step; it writes no version."""
        return jsonify(trainer.jobs.cancel(job_id).to_dict()), 202

    @app.post("/models/<name>/versions/<int:version>/promote")
    @documented(response=PROMOTED)
    def promote(name: str, version: int):
        """Serve this kept version of the model from now on (promotion or rollback)."""
        return jsonify(trainer.promote(name, version))


def _refuse(app: Flask, rules: list[str], method: str, message: str) -> None:
    """Routes of the other role: a 409 that says where to go, instead of a bare 404."""

    def refused(**_):
        raise Conflict(message)

    refused.__doc__ = f"Not on this role: 409. {message}."
    refused.inference = refused.accepts_any_media_type = True  # no token or JSON needed to be told where to go
    for rule in rules:
        app.add_url_rule(rule, endpoint=f"refused {method} {rule}", view_func=refused, methods=[method])


def _model_entries(service: ModelService, watcher: RepositoryWatcher | None) -> list[dict]:
    """/models entries: what a server serves, or (on a trainer) what the repository promotes."""
    if watcher:
        return [served.to_dict() for served in service.models.values()]
    entries = []
    for served in service.models.values():
        version = service.repository.promoted(served.name)
        meta = service.repository.meta(served.name, version) if version is not None else {}
        entries.append(describe(served, meta, version, ready=version is not None, warmup_ms=None))
    return entries
