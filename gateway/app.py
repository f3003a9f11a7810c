"""The gateway (port 8000): fan-out prediction, training runs, evaluation, benchmark, comparison, web page.

Uploads are preprocessed once, here, and sent to every service as the same
28x28 float32 pixels (raw bytes, servekit.tensor_body): every model then sees exactly the same input (a fair
comparison, and one place to look when a digit is misread), and a large
upload is decoded once instead of once per service.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
from flask import Flask, Response, g, jsonify, request, send_from_directory
from prometheus_client import Counter as MetricCounter

from servekit.app import install_error_handlers
from servekit.auth import Auth, inference, install_auth, load_auth, read_token
from servekit.backend import TrainConfig
from servekit.batching import describe_batching
from servekit.errors import ApiError, BadRequest
from servekit.inputs import (
    TRAIN_REQUEST_FIELDS,
    json_body,
    optional_bool,
    optional_int,
    optional_seeds,
    predict_input,
    promotion_policy,
    query_bool,
    query_int,
    train_config,
)
from servekit.limits import Slots, install_rate_limit
from servekit.metrics import GatewayMetrics
from servekit.observability import instrument
from servekit.openapi import build_openapi, documented
from servekit.schemas import PREDICT_REQUEST, PROMOTED, VERSIONS
from servekit.web_security import accepts_any_media_type, install_web_security

from .benchmark import DEFAULT_MAX_SECONDS, MAX_CONCURRENCY, MAX_REQUESTS, benchmark_model
from .chart import Charts
from .clients import STATUS_TIMEOUT_S, ServiceClient, ServiceDirectory, ServiceError, as_api_error
from .compare import build_comparison
from .first_batches import FirstBatches, png_data_url
from .judging import Judge
from .parity import run_parity
from .predictions import PredictionFanOut
from .report import REPORT_CSP, Reports
from .report_data import ReportData
from .runs import RunManager
from .schemas import (
    BENCHMARK,
    BENCHMARK_REQUEST,
    COMPARE,
    DISAGREEMENTS,
    EVALUATION_RECORD,
    FIRST_BATCHES,
    GATEWAY_HEALTH,
    GATEWAY_PREDICT,
    PARITY_ANSWER,
    PARITY_REQUEST,
    RUN,
    RUN_ACCEPTED,
    RUN_REQUEST,
    RUNS,
    SELECTION,
    SERVICES,
)
from .settings import GatewaySettings
from .store import Store

log = logging.getLogger(__name__)
INTERACTIVE_GRACE_S = 5.0  # beyond a call's own timeout: its connect, and a wait for a free pool thread
STATIC = Path(__file__).parent / "static"
EVALUATE_TIMEOUT_S = 300.0
MAX_TEST_IMAGES = 100  # per /compare/disagreements answer (and per /data/test call to a service)
RUN_FIELDS = (TRAIN_REQUEST_FIELDS - {"model", "run_id"}) | {"models", "parallel", "seeds"}


def create_gateway_app(settings: GatewaySettings | None = None) -> Flask:
    """The gateway app over the services in ``settings.service_urls``."""
    settings = settings or GatewaySettings.from_env()
    metrics = GatewayMetrics()
    directory = ServiceDirectory(settings.service_urls, on_call=metrics.observe_backend_call,
                                 refresh_s=settings.discovery_refresh_s, trainer_urls=settings.trainer_urls,
                                 token=read_token(os.environ, "SERVICE"), interactive_threads=settings.threads,
                                 interactive_timeout_s=settings.predict_timeout_s + INTERACTIVE_GRACE_S)
    store = Store(settings.data_dir / "gateway.sqlite3")
    judge = Judge(directory, served_rows=lambda: build_comparison(directory, store)["models"])
    runs = RunManager(directory, store, job_deadline_s=settings.job_deadline_s,
                      on_run_finished=lambda run: judge.watch())
    judge.watch()  # the versions served now: their verdict is ready before anyone asks
    chart_renders = MetricCounter("chart_renders", "Comparison charts rendered (not served from the cache), by format",
                                  ["format"], registry=metrics.registry)
    charts = Charts(on_render=lambda fmt: chart_renders.labels(fmt).inc())
    first_batch_answers = FirstBatches(directory)
    reports = Reports(ReportData(directory, store, judge, runs, first_batch_answers))
    app = Flask("gateway", static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    install_error_handlers(app)
    instrument(app, metrics)  # first: a request refused by the checks below still gets its id, count and log line
    install_web_security(app, settings.allowed_hosts)
    auth = load_auth(os.environ, token_file=settings.data_dir / "api_token")
    install_auth(app, auth)
    if auth.enabled:
        announce_page_url(auth, settings.public_url)
    predictions_fan_out = PredictionFanOut(directory, settings.predict_timeout_s, settings.max_batch,
                                           settings.batch_window_ms / 1000.0,
                                           on_batch=lambda images, seconds: metrics.fan_out_batch_size.observe(images))
    benchmarks = Slots(1, "benchmark is", status=409, retry_after_s=30)  # two would measure each other
    evaluations = Slots(settings.max_evaluations, "evaluations are")

    @app.get("/")
    def index():
        """The web page."""
        return send_from_directory(STATIC, "index.html")

    @app.get("/health/live")
    def live():
        """Liveness of the gateway alone (for probes): it answers without asking any service."""
        return jsonify(status="ok")

    @app.get("/health")
    @documented(response=GATEWAY_HEALTH)
    def health():
        """The gateway is up; how many services answer."""
        up = directory.fan_out(lambda c: c.call("GET", "/health", STATUS_TIMEOUT_S).body)
        answering = [name for name, result in up.items() if not isinstance(result, Exception)]
        return jsonify(status="ok", services=len(up), services_up=len(answering),
                       batching=describe_batching(settings.max_batch, settings.batch_window_ms))

    @app.get("/services")
    @documented(response=SERVICES)
    def services():
        """Every service and its models: up or not, ready, last trained, test accuracy."""
        statuses = directory.fan_out(lambda client: _service_status(directory, client))
        return jsonify(services=[
            {"name": name, "up": False, "error": f"{type(status).__name__}: {status}", "models": []}
            if isinstance(status, Exception) else status
            for name, status in statuses.items()
        ])

    @app.post("/predict")
    @documented(request_body=PREDICT_REQUEST, response=GATEWAY_PREDICT)
    @accepts_any_media_type
    @inference
    def predict():
        """Every model's prediction for one digit, asked in parallel, with the consensus.

        Concurrent uploads share one call per service (``batch``: the images of that fan-out, and how long this
        upload waited for it)."""
        started = time.perf_counter()
        with predictions_fan_out.incoming():
            x = predict_input(request)
        predictions, batch = predictions_fan_out.predict(x, g.request_id)
        labels = [p["label"] for p in predictions if "label" in p]
        if not labels:
            errors = "; ".join(p["error"] for p in predictions) or "no services configured"
            raise ApiError(f"no service answered: {errors}", 502)
        label, votes = Counter(labels).most_common(1)[0]
        return jsonify(
            predictions=predictions,
            consensus={"label": label, "votes": votes, "of": len(labels)},
            input=np.round(x[0, :, :, 0], 4).tolist(),
            batch={"images": batch.batch_size, "queue_ms": round(batch.queue_ms, 3)},
            total_ms=round((time.perf_counter() - started) * 1000.0, 3),
        )

    @app.post("/train")
    @documented(request_body={"application/json": RUN_REQUEST}, response=RUN_ACCEPTED, status=202)
    def train():
        """Start a run training every (or the chosen) model; one at a time unless ``parallel``."""
        body = json_body(request, allowed=RUN_FIELDS)
        models = _model_list(body)
        parallel = optional_bool(body, "parallel")
        seeds = optional_seeds(body)
        config = {k: v for k, v in train_config(body).to_dict().items() if v is not None}
        if seeds:
            config = {**config, "seeds": seeds, "seed": seeds[0]}
        run = runs.start(models, {**config, "promote": promotion_policy(body)}, parallel)
        return jsonify(run_id=run["run_id"], status_url=f"/runs/{run['run_id']}", status=run["status"]), 202

    @app.get("/runs")
    @documented(response=RUNS)
    def list_runs():
        """Training runs, newest first (persisted across restarts)."""
        return jsonify(runs=runs.history(query_int(request.args, "limit", 1, 1000, default=50)))

    @app.post("/runs/<run_id>/cancel")
    @app.delete("/runs/<run_id>")
    @documented(response=RUN, status=202)
    def cancel_run(run_id: str):
        """Stop a run: the model training now is cancelled on its trainer, the others never start."""
        return jsonify(runs.cancel(run_id)), 202

    @app.get("/runs/<run_id>")
    @documented(response=RUN)
    def run_status(run_id: str):
        """One run: overall progress and every model's epoch, step, loss and results."""
        return jsonify(runs.get(run_id))

    @app.get("/models/<name>/versions")
    @documented(response=VERSIONS)
    def model_versions(name: str):
        """A model's kept versions with their meta and which one is promoted (asked of its trainer)."""
        service = directory.owner(name)
        try:
            return jsonify(directory.trainer(service).call("GET", f"/models/{name}/versions", STATUS_TIMEOUT_S).body)
        except ServiceError as exc:
            raise as_api_error(exc) from None

    @app.post("/models/<name>/versions/<int:version>/promote")
    @documented(response=PROMOTED)
    def promote_version(name: str, version: int):
        """Serve this kept version of the model from now on (promotion or rollback); replicas follow."""
        service = directory.owner(name)
        path = f"/models/{name}/versions/{version}/promote"
        try:
            promoted = directory.trainer(service).call("POST", path, 30, json={}).body
        except ServiceError as exc:
            raise as_api_error(exc) from None
        judge.watch()  # the verdict of the new served set, in the background
        return jsonify(promoted)

    @app.post("/evaluate")
    @documented(request_body={"application/json": SELECTION}, response=EVALUATION_RECORD)
    def evaluate():
        """Every (or the chosen) model's test accuracy, from all services in parallel."""
        body = json_body(request, allowed={"models", "limit"})
        limit = optional_int(body, "limit", 1, 10_000)
        plan = directory.resolve(_model_list(body))
        with evaluations.take():
            answers = directory.fan_out(lambda client: _evaluate_service(client, plan[client.name], limit),
                                        list(plan), pool="batch")
        results = []
        for service, answer in answers.items():
            if isinstance(answer, Exception):
                results.extend({"model": m, "service": service, "error": str(answer)} for m in plan[service])
            else:
                results.extend(answer)
        record = {"evaluation_id": uuid.uuid4().hex[:12], "created_at": time.time(), "results": results}
        store.put("evaluations", record["evaluation_id"], record, record["created_at"])
        return jsonify(record)

    @app.post("/benchmark")
    @documented(request_body={"application/json": BENCHMARK_REQUEST}, response=BENCHMARK)
    def benchmark():
        """Latency percentiles and throughput of every (or the chosen) model's /predict, one model at a time."""
        body = json_body(request, allowed={"models", "requests", "concurrency", "max_seconds"})
        count = optional_int(body, "requests", 1, MAX_REQUESTS) or 200
        concurrency = optional_int(body, "concurrency", 1, MAX_CONCURRENCY) or 1
        max_seconds = body.get("max_seconds", DEFAULT_MAX_SECONDS)
        if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) or not 0 < max_seconds <= 600:
            raise BadRequest("'max_seconds' must be a number between 0 and 600")
        plan = directory.resolve(_model_list(body))
        results = []
        with benchmarks.take():
            for service, models in plan.items():
                for model in models:
                    results.append({
                        **benchmark_model(directory.clients[service], model, count, concurrency, max_seconds),
                        "service": service,
                    })
        record = {"benchmark_id": uuid.uuid4().hex[:12], "created_at": time.time(), "requests": count,
                  "concurrency": concurrency, "results": results}
        store.put("benchmarks", record["benchmark_id"], record, record["created_at"])
        return jsonify(record)

    @app.get("/compare")
    @documented(response=COMPARE)
    def compare():
        """The comparison: per model framework, params, training time, accuracy (mean ± sd over seeds, 95%
        interval), serving latency, throughput; and the verdict: exact McNemar tests of every pair."""
        return jsonify(build_comparison(directory, store, judge))

    @app.post("/parity")
    @documented(request_body={"application/json": PARITY_REQUEST}, response=PARITY_ANSWER)
    def parity():
        """The source model's weights loaded into every implementation: each one's largest difference in
        probability from the source and its agreement, over the test images."""
        body = json_body(request, required=True, allowed={"source", "limit"})
        source = body.get("source")
        if not isinstance(source, str):
            raise BadRequest("'source' must name the model whose weights are transplanted")
        limit = optional_int(body, "limit", 1, 10_000)
        with evaluations.take():
            result = run_parity(directory, source, limit)
        store.put("parity", uuid.uuid4().hex[:12], {**result, "created_at": time.time()}, time.time())
        return jsonify(result)

    @app.get("/data/first-batch")
    @documented(response=FIRST_BATCHES)
    def first_batches():
        """The first training batch each model's own pipeline yields (``?seed=``, ``?same_start=``): grids and
        hashes side by side."""
        seed = query_int(request.args, "seed", 0, 2**31 - 1, default=TrainConfig.seed)
        same_start = query_bool(request.args, "same_start")
        return jsonify(seed=seed, same_start=same_start, batches=first_batch_answers.answer(seed, same_start))

    @app.get("/compare/disagreements")
    @documented(response=DISAGREEMENTS)
    def compare_disagreements():
        """Test digits on which the served models disagree, most split first, with each model's answer."""
        limit = query_int(request.args, "limit", 1, MAX_TEST_IMAGES, default=50)
        rows = build_comparison(directory, store)["models"]
        judged = judge.disagreements(rows, limit)
        if judged is None:  # the answers are being computed in the background (as /compare's verdict says)
            return jsonify(status="computing", models=[], count=0, disagreements=[])
        found, models = judged
        _attach_images(directory, found)
        return jsonify(status="ready", models=models, count=len(found), disagreements=found)

    @app.get("/compare/chart.png")
    @documented(content="image/png")
    def chart_png():
        """The comparison chart as PNG."""
        return Response(charts.get(build_comparison(directory, store), "png"), mimetype="image/png")

    @app.get("/compare/chart.svg")
    @documented(content="image/svg+xml")
    def chart_svg():
        """The comparison chart as SVG."""
        return Response(charts.get(build_comparison(directory, store), "svg"), mimetype="image/svg+xml")

    @app.get("/report")
    @documented(content="text/html", response={"type": "string"})
    def report():
        """The latest comparison as one self-contained HTML document (no scripts, images inline).

        It reads offline and prints; ``X-Report-Complete: false`` while a part of it is still being computed."""
        page, complete = reports.html()
        response = Response(page, mimetype="text/html")
        response.headers["Content-Security-Policy"] = REPORT_CSP  # nothing to fetch, nothing to run
        response.headers["X-Report-Complete"] = "true" if complete else "false"
        return response

    @app.get("/report.md")
    @documented(content="application/zip", response={"type": "string", "format": "binary"})
    def report_markdown():
        """The report as Markdown: a zip of report.md and images/*.png (or ?images=inline: one file).

        With ``?images=inline`` the images are data: URLs in the one Markdown file."""
        images = request.args.get("images", "files")
        if images not in ("files", "inline"):
            raise BadRequest("'images' must be 'files' (a zip of report.md and its images) or 'inline' (one "
                             "Markdown file, images as data: URLs)")
        if images == "inline":
            text, complete = reports.markdown()
            response = Response(text, mimetype="text/markdown")
        else:
            archive, complete = reports.markdown_zip()
            response = Response(archive, mimetype="application/zip",
                                headers={"Content-Disposition": 'attachment; filename="report.zip"'})
        response.headers["X-Report-Complete"] = "true" if complete else "false"
        return response

    @app.get("/metrics")
    @documented(content="text/plain")
    def prometheus_metrics():
        """Prometheus text-format metrics: requests, and calls to each service."""
        return Response(metrics.render(), mimetype="text/plain; version=0.0.4")

    @app.get("/openapi.json")
    def openapi():
        """The gateway's OpenAPI 3 document, generated from its routes."""
        return jsonify(build_openapi(app, "MNIST framework comparison gateway", "0.1.0"))

    install_rate_limit(app, settings.rate_limit)
    # What gateway.serve calls on SIGTERM/SIGINT, once the server has stopped taking requests.
    app.extensions["gateway.stop"] = lambda: runs.stop("the gateway stopped during this run")
    return app


def announce_page_url(auth: Auth, public_url: str) -> None:
    """Print the page URL, carrying the token (in the fragment: it never reaches a server log) when the gateway
    generated it; an operator's token (API_TOKEN, a Docker or Kubernetes secret file) stays out of the log."""
    if auth.supplied_by:
        print(f"open {public_url}/#token=<token> in a browser, <token> being the one {auth.supplied_by} holds "
              "(API calls: Authorization: Bearer <token>)", file=sys.stderr, flush=True)
        return
    print(f"open {public_url}/#token={auth.token} in a browser (API calls: Authorization: Bearer {auth.token})",
          file=sys.stderr, flush=True)


def _service_status(directory: ServiceDirectory, client: ServiceClient) -> dict:
    """A service as /services shows it: each replica's /health (asked directly), its models (asked of one
    replica) and its trainer; the service is up when one replica answers."""
    healths, replicas = [], []
    for replica in client.replicas():
        health, entry = _replica_status(client, replica.url)
        replicas.append(entry)
        if health is not None:
            healths.append(health)
    trainer = None
    if directory.trainers is not directory.clients and client.name in directory.trainers:
        trainer_client = directory.trainers[client.name]
        trainer = _replica_status(trainer_client, trainer_client.url)[1]
    status = {"name": client.name, "url": client.url, "replicas": replicas, "trainer": trainer}
    try:
        if not healths:
            raise ServiceError("; ".join(entry["error"] for entry in replicas) or f"{client.name} has no replica")
        models = client.call("GET", "/models", STATUS_TIMEOUT_S).body["models"]
    except ServiceError as exc:
        return {**status, "up": False, "error": str(exc), "models": []}
    health = healths[0]
    return {
        **status,
        "up": True,
        "framework": health["framework"],
        "framework_version": health["framework_version"],
        "threads": health.get("threads"),
        "data_sha256": health.get("data_sha256"),
        "training": health.get("training"),
        "models": [
            {key: m.get(key) for key in ("name", "ready", "version", "params", "trained_at", "test_accuracy",
                                         "layers")}
            for m in models
        ],
    }


def _replica_status(client: ServiceClient, url: str) -> tuple[dict | None, dict]:
    """(its /health or None, its /services entry) of one replica."""
    try:
        health = client.call_replica(url, "GET", "/health", STATUS_TIMEOUT_S).body
    except ServiceError as exc:
        return None, {"url": url, "up": False, "error": str(exc)}
    return health, {"url": url, "up": True, "served_by": health.get("served_by"), "role": health.get("role"),
                    "model_versions": health.get("model_versions", {}), "training": health.get("training"),
                    "workers": (health.get("threads") or {}).get("workers")}


def _attach_images(directory: ServiceDirectory, entries: list[dict]) -> None:
    """Each entry's test image as a PNG data: URL, from the first service that has the data (else None)."""
    images = {}
    if entries:
        indices = ",".join(str(e["index"]) for e in entries)
        for client in directory.clients.values():
            try:
                found = client.call("GET", f"/data/test?indices={indices}", STATUS_TIMEOUT_S).body["images"]
            except ServiceError:
                continue
            images = {image["index"]: png_data_url(image["png"]) for image in found}
            break
    for entry in entries:
        entry["image"] = images.get(entry["index"])


def _evaluate_service(client: ServiceClient, models: list[str], limit: int | None) -> list[dict]:
    results = []
    for model in models:
        body = {"model": model} if limit is None else {"model": model, "limit": limit}
        try:
            for result in client.call("POST", "/evaluate", EVALUATE_TIMEOUT_S, json=body).body["results"]:
                results.append({**result, "service": client.name})
        except ServiceError as exc:
            results.append({"model": model, "service": client.name, "error": str(exc)})
    return results


def _model_list(body: dict) -> list[str] | None:
    models = body.get("models")
    if models is not None and (not isinstance(models, list) or not all(isinstance(m, str) for m in models)):
        raise BadRequest("'models' must be a list of model names")
    if models is not None and len(set(models)) != len(models):
        repeated = sorted({m for m in models if models.count(m) > 1})
        raise BadRequest(f"'models' names {', '.join(repeated[:5])} more than once")
    return models

