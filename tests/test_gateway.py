"""The gateway in front of the real services, over HTTP: fan-out, runs, evaluate, benchmark, compare.

Tests run in file order on one stack (module fixture): untrained first, then a
tiny training run, then everything that needs trained models.
"""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image

from servekit.testing import TEST_TOKEN, assert_matches_openapi, authorized, png_bytes, wait_healthy
from tests.conftest import SERVICES

ROOT = Path(__file__).resolve().parents[1]

TRAIN = {"epochs": 1, "train_limit": 4000}


@pytest.fixture(scope="module")
def spec(stack):
    """The gateway's own OpenAPI document: responses below are validated against it."""
    return requests.get(stack.url + "/openapi.json", timeout=30).json()


def get(stack, path, **kwargs):
    return requests.get(stack.url + path, timeout=120, **kwargs)


API = authorized()  # state-changing calls carry the gateway's token


def post(stack, path, **kwargs):
    return API.post(stack.url + path, timeout=600, **kwargs)


def upload(image):
    return {"files": {"image": ("digit.png", png_bytes(image), "image/png")}}


def test_services_lists_every_service_and_model(stack, all_models, mnist, spec):
    response = get(stack, "/services")
    assert_matches_openapi(spec, "GET", "/services", response)
    services = response.json()["services"]
    assert sorted(s["name"] for s in services) == sorted(stack.services)
    assert all(s["up"] for s in services)
    assert {s["data_sha256"] for s in services} == {mnist.sha256}  # the same bytes in every framework
    models = sorted(m["name"] for s in services for m in s["models"])
    assert models == all_models
    assert all(m["params"] == 34_826 and m["ready"] is False for s in services for m in s["models"])


def test_predict_with_no_trained_model_is_502_with_reasons(stack, digits, spec):
    response = post(stack, "/predict", **upload(digits[0][0]))
    assert response.status_code == 502
    assert_matches_openapi(spec, "POST", "/predict", response)
    assert "not trained" in response.json()["error"]


def test_bad_requests(stack):
    assert post(stack, "/predict", json={"nothing": 1}).status_code == 400
    assert post(stack, "/predict", data=b"text", headers={"Content-Type": "text/plain"}).status_code == 415
    assert get(stack, "/runs/nope").status_code == 404
    assert post(stack, "/train", json={"models": ["no-such-model"]}).status_code == 404
    assert post(stack, "/train", json={"models": "torch"}).status_code == 400
    assert post(stack, "/benchmark", json={"requests": 0}).status_code == 400
    for response in (get(stack, "/runs/nope"), post(stack, "/benchmark", json={"concurrency": 999})):
        assert response.json()["error"]


def test_run_trains_every_model_one_at_a_time(stack, all_models, spec):
    response = post(stack, "/train", json=TRAIN)
    assert response.status_code == 202, response.text
    assert_matches_openapi(spec, "POST", "/train", response)
    run_id = response.json()["run_id"]
    assert post(stack, "/train", json=TRAIN).status_code == 409

    progress_seen, running_at_once = [], 0
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        run = get(stack, f"/runs/{run_id}").json()
        progress_seen.append(run["progress"])
        running_at_once = max(running_at_once, sum(m["status"] == "running" for m in run["models"].values()))
        if run["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.3)
    assert run["status"] == "succeeded", run
    assert_matches_openapi(spec, "GET", "/runs/{run_id}", get(stack, f"/runs/{run_id}"))
    assert sorted(run["models"]) == all_models
    assert running_at_once == 1  # sequential by default: fair timings
    assert progress_seen == sorted(progress_seen) and run["progress"] == 1.0
    assert any(0 < p < 1 for p in progress_seen)
    for entry in run["models"].values():
        assert entry["status"] == "succeeded"
        assert entry["history"][0]["val_accuracy"] > 0.5
        assert entry["test_accuracy"] > 0.5
    stack.state["run_id"] = run_id


def test_predict_fans_out_to_every_model_with_consensus(stack, all_models, digits, spec):
    images, labels = digits
    agreed = 0
    for image, label in zip(images[:10], labels[:10], strict=True):
        response = post(stack, "/predict", **upload(image))
        assert_matches_openapi(spec, "POST", "/predict", response)
        body = response.json()
        predictions = body["predictions"]
        assert sorted(p["model"] for p in predictions) == all_models
        for p in predictions:
            assert {"label", "probabilities", "inference_ms", "roundtrip_ms", "framework"} <= set(p)
            assert p["roundtrip_ms"] >= p["inference_ms"]
        assert body["consensus"]["of"] == len(all_models) and 1 <= body["consensus"]["votes"] <= len(all_models)
        assert body["total_ms"] > 0
        agreed += body["consensus"]["label"] == label
    assert agreed >= 8


def test_request_id_follows_an_upload_through_every_service(stack, digits):
    response = post(stack, "/predict", headers={"X-Request-ID": "trace-4711"}, **upload(digits[0][0]))
    assert response.headers["X-Request-ID"] == "trace-4711"
    for name, service in stack.services.items():
        lines = [json.loads(line) for line in service.log_tail(400).splitlines() if "trace-4711" in line]
        assert any(line.get("path") == "/predict" and line["status"] == 200 for line in lines), name
    generated = post(stack, "/predict", **upload(digits[0][0])).headers["X-Request-ID"]
    assert len(generated) == 32 and generated != "trace-4711"


def test_concurrent_uploads_share_fan_outs_and_each_gets_its_own_answer(stack, all_models, digits, spec):
    images, _ = digits
    health = get(stack, "/health").json()
    assert health["batching"] == {"max_batch": 16, "window_ms": 2.0, "enabled": True}
    alone = {}  # the answers of each digit sent on its own: what every batched answer must match
    for index in range(12):
        body = post(stack, "/predict", **upload(images[index])).json()
        assert body["batch"]["images"] == 1  # nobody else was asking
        alone[index] = {p["model"]: p["probabilities"] for p in body["predictions"]}
        alone[index]["input"] = body["input"]

    shared_sizes = []
    for round_number in range(3):  # a scheduler may run 12 threads one after another once; three times, hardly
        barrier = threading.Barrier(12)

        def ask(index, round_number=round_number, barrier=barrier):
            barrier.wait(30)
            headers = {"X-Request-ID": f"together-{round_number}-{index}"}
            return index, post(stack, "/predict", headers=headers, **upload(images[index]))

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(ask, range(12)))
        for index, response in answers:
            assert response.status_code == 200, response.text
            assert_matches_openapi(spec, "POST", "/predict", response)
            body = response.json()
            assert body["input"] == alone[index]["input"]  # its own image came back
            assert sorted(p["model"] for p in body["predictions"]) == all_models
            for p in body["predictions"]:  # its own rows of the batch, not a neighbour's
                assert p["probabilities"] == pytest.approx(alone[index][p["model"]], abs=2e-3), (index, p["model"])
            shared_sizes.append(body["batch"]["images"])
        if max(shared_sizes) > 1:
            break
    assert max(shared_sizes) > 1, f"12 concurrent uploads never shared a fan-out: {shared_sizes}"
    assert max(shared_sizes) <= 16
    # One call carried several uploads, and said whose: their ids, comma-separated, in every service's log.
    for name, service in stack.services.items():
        ids = [json.loads(line).get("request_id") or "" for line in service.log_tail(800).splitlines()
               if "together-" in line]
        assert any("," in request_id for request_id in ids), name
    text = get(stack, "/metrics").text
    assert "predict_fan_out_batch_size_count" in text and 'predict_fan_out_batch_size_bucket{le="1.0"}' in text


def test_gateway_metrics_count_backend_calls(stack):
    text = get(stack, "/metrics").text
    for name in stack.services:
        assert f'backend_call_duration_seconds_count{{path="/predict",service="{name}"}}' in text
    assert 'http_requests_total{endpoint="/predict",method="POST",status="200"}' in text


def test_evaluate_every_model(stack, all_models):
    body = post(stack, "/evaluate", json={"limit": 2000}).json()
    results = body["results"]
    assert sorted(r["model"] for r in results) == all_models
    assert all(r["accuracy"] > 0.5 and r["samples"] == 2000 for r in results)


def test_benchmark_reports_percentiles_and_throughput(stack, all_models, spec):
    response = post(stack, "/benchmark", json={"requests": 30, "concurrency": 2})
    assert_matches_openapi(spec, "POST", "/benchmark", response)
    body = response.json()
    assert sorted(r["model"] for r in body["results"]) == all_models
    for result in body["results"]:
        assert result["errors"] == 0 and result["ok"] == 30
        latency = result["latency_ms"]
        assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"]
        assert result["throughput_rps"] > 0
        assert result["inference_ms"]["p50"] < latency["p50"]


def test_compare_has_every_field(stack, all_models, spec):
    response = get(stack, "/compare")
    assert_matches_openapi(spec, "GET", "/compare", response)
    rows = response.json()["models"]
    assert sorted(r["model"] for r in rows) == all_models
    for row in rows:
        assert row["framework"] and row["framework_version"] and row["params"] == 34_826
        training = row["training"]
        assert training["total_seconds"] > 0 and training["epoch_seconds"] > 0 and training["ms_per_step"] > 0
        assert row["validation_accuracy"] > 0.5 and row["test_accuracy"] > 0.5
        serving = row["serving"]
        assert serving["latency_ms"]["p50"] > 0 and serving["latency_ms"]["p99"] > 0
        assert serving["throughput_rps"] > 0


def test_chart_png_and_svg(stack):
    png = get(stack, "/compare/chart.png")
    assert png.headers["Content-Type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.format == "PNG" and image.width > 600 and image.height > 400
    svg = get(stack, "/compare/chart.svg")
    root = ET.fromstring(svg.content)
    assert root.tag.endswith("svg")
    assert b"keras-sequential" in svg.content and b"Throughput" in svg.content


def test_a_stopped_service_gives_error_entries_while_others_answer(stack, all_models, digits):
    torch = stack.services["torch"]
    torch.stop()
    try:
        body = post(stack, "/predict", **upload(digits[0][0])).json()
        by_model = {p["model"]: p for p in body["predictions"]}
        assert "error" in by_model["torch"] and "unreachable" in by_model["torch"]["error"]
        answered = [p for p in body["predictions"] if "label" in p]
        assert len(answered) == len(all_models) - len(SERVICES["torch"][1])
        assert body["consensus"]["of"] == len(answered)  # the answers counted, not the errors
        services = {s["name"]: s for s in get(stack, "/services").json()["services"]}
        assert services["torch"]["up"] is False and services["keras"]["up"] is True
    finally:
        torch.start()


@pytest.fixture
def slow_service():
    """A real HTTP server on loopback that lists one model and answers /predict too late."""

    class Slow(http.server.BaseHTTPRequestHandler):
        def _json(self, body):
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._json({"models": [{"name": "slowpoke"}]} if self.path == "/models" else {"status": "ok"})

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            time.sleep(3)
            self._json({"predictions": []})

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_slow_service_times_out_into_an_error_entry(stack, all_models, slow_service, digits, tmp_path,
                                                     gateway_factory):
    urls = {name: service.url for name, service in stack.services.items()} | {"slow": slow_service}
    gateway = gateway_factory(urls, tmp_path, PREDICT_TIMEOUT_S="1")
    try:
        started = time.monotonic()
        response = requests.post(gateway.url + "/predict", timeout=60, **upload(digits[0][0]))
        elapsed = time.monotonic() - started
        assert response.status_code == 200
        by_model = {p["model"]: p for p in response.json()["predictions"]}
        assert "did not answer within 1 s" in by_model["slowpoke"]["error"]
        assert sum("label" in p for p in by_model.values()) == len(all_models)
        assert elapsed < 2.9  # the gateway did not wait for the slow service's 3 s
    finally:
        gateway.stop()


def test_cli_trains_in_parallel_and_writes_the_comparison(stack, all_models, tmp_path):
    import subprocess

    out = tmp_path / "results"
    command = [str(ROOT / "scripts" / "compare"), "--gateway", stack.url, "--out", str(out), "--epochs", "1",
               "--train-limit", "2000", "--parallel", "--requests", "10", "--fan-out-calls", "5",
               "--token", TEST_TOKEN]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    for model in all_models:
        assert model in result.stderr and "100%" in result.stderr  # a progress bar per model, finished
        assert any(line.startswith(model) for line in result.stdout.splitlines())  # a table row per model
    assert f"gateway (all {len(SERVICES)} services)" in result.stdout
    comparison = json.loads((out / "comparison.json").read_text())
    assert sorted(row["model"] for row in comparison["models"]) == all_models
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "chart.svg").read_bytes()
    latest = get(stack, "/runs").json()["runs"][0]
    assert latest["parallel"] is True and latest["status"] == "succeeded"
    spans = {m["service"]: (m["started_at"], m["finished_at"]) for m in latest["models"].values()}
    overlapping = [(a, b) for a in spans for b in spans
                   if a < b and spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]]
    assert overlapping, f"parallel run trained the services one after another: {spans}"


def test_run_history_survives_a_gateway_restart(stack):
    run_id = stack.state["run_id"]
    stack.stop()
    stack.start()
    wait_healthy(stack.url + "/health", 60)
    runs = get(stack, "/runs").json()["runs"]
    assert run_id in [r["run_id"] for r in runs]
    run = get(stack, f"/runs/{run_id}").json()
    assert run["status"] == "succeeded" and run["progress"] == 1.0


def test_openapi_lists_gateway_routes(stack, spec):
    from openapi_spec_validator import validate

    validate(spec)  # a valid OpenAPI 3.0 document
    assert_matches_openapi(spec, "GET", "/runs", get(stack, "/runs"))
    paths = spec["paths"]
    for path in ("/predict", "/train", "/runs", "/runs/{run_id}", "/evaluate", "/benchmark", "/compare",
                 "/compare/chart.png", "/services"):
        assert path in paths, path


@pytest.mark.parametrize("path", ["/health", "/services", "/compare"])
def test_status_endpoints_answer_json(stack, path):
    assert get(stack, path).status_code == 200
