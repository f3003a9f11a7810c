"""The service contract of docs/api.md, asserted for every service in SERVICES (in file order)."""

from __future__ import annotations

import math

import pytest
import requests

from servekit.testing import assert_matches_openapi, authorized, png_bytes, wait_for_job

TRAIN_LIMIT = 3000
MIN_RIGHT_OF_20 = 12  # one epoch on 3,000 images leaves the weakest model (keras-torch) near 70% on the test set
EXPECTED_PARAMS = 34_826


@pytest.fixture(scope="module")
def spec(service):
    """The service's own OpenAPI document: every response below is validated against it."""
    return requests.get(service.url + "/openapi.json", timeout=30).json()


def get(service, path, **kwargs):
    return requests.get(service.url + path, timeout=60, **kwargs)


API = authorized()  # state-changing calls carry the services' token


def post(service, path, **kwargs):
    return API.post(service.url + path, timeout=300, **kwargs)


def test_health_reports_framework_data_and_threads(service, mnist, spec):
    response = get(service, "/health")
    assert_matches_openapi(spec, "GET", "/health", response)
    body = response.json()
    assert body["status"] == "ok"
    assert body["framework"] == service.framework
    assert body["framework_version"]
    assert body["data_sha256"] == mnist.sha256  # the same bytes as the framework-free loader
    assert body["threads"]["intra_op"] == 2


def test_models_have_the_same_parameter_count(service, spec):
    response = get(service, "/models")
    assert_matches_openapi(spec, "GET", "/models", response)
    models = response.json()["models"]
    assert [m["name"] for m in models] == service.models
    for model in models:
        assert model["params"] == EXPECTED_PARAMS
        assert sum(layer["params"] for layer in model["layers"]) == EXPECTED_PARAMS
        assert model["layers"][-1]["output_shape"][-1] == 10
        assert model["ready"] is False and model["trained_at"] is None


def test_predict_before_training_is_503(service, digits, spec):
    response = post(service, "/predict", files={"image": ("d.png", png_bytes(digits[0][0]), "image/png")})
    assert response.status_code == 503
    assert_matches_openapi(spec, "POST", "/predict", response)
    assert "not trained" in response.json()["error"]
    assert get(service, f"/v2/models/{service.models[0]}/ready").status_code == 503


def test_training_progresses_and_second_job_conflicts(service, spec):
    response = post(service, "/train", json={"epochs": 1, "train_limit": TRAIN_LIMIT})
    assert response.status_code == 202, response.text
    assert_matches_openapi(spec, "POST", "/train", response)
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert accepted["status_url"] == f"/train/{accepted['job_id']}"

    conflict = post(service, "/train", json={"epochs": 1, "train_limit": 100})
    assert conflict.status_code == 409
    assert_matches_openapi(spec, "POST", "/train", conflict)
    assert accepted["job_id"] in conflict.json()["error"]

    seen = [accepted["status"]]
    status = wait_for_job(service.url + accepted["status_url"], timeout=600, seen=seen)
    assert status["status"] == "succeeded", status["error"]
    assert seen == ["queued", "running", "succeeded"]
    assert_matches_openapi(spec, "GET", "/train/{job_id}", get(service, accepted["status_url"]))
    assert_matches_openapi(spec, "GET", "/train", get(service, "/train"))
    assert status["epochs"] == 1 and status["epoch"] == 1
    assert status["steps_per_epoch"] == math.ceil(TRAIN_LIMIT / 128)
    for model in service.models:
        history = status["results"][model]["history"]
        assert len(history) == 1
        record = history[0]
        assert set(record) >= {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
        assert record["val_accuracy"] > 0.5
    models = get(service, "/models").json()["models"]
    assert all(m["ready"] and m["trained_at"] and m["test_accuracy"] > 0.5 for m in models)


def test_evaluate_is_well_above_chance(service, spec):
    response = post(service, "/evaluate", json={})
    assert_matches_openapi(spec, "POST", "/evaluate", response)
    results = response.json()["results"]
    assert [r["model"] for r in results] == service.models
    for result in results:
        assert result["samples"] == 10_000
        assert result["accuracy"] > 0.6
        assert result["loss"] > 0
    limited = post(service, "/evaluate", json={"model": service.models[0], "limit": 500}).json()["results"]
    assert len(limited) == 1 and limited[0]["samples"] == 500


def test_predict_png_uploads_of_real_digits(service, digits, spec):
    images, labels = digits
    correct = {m: 0 for m in service.models}
    for image, label in zip(images, labels, strict=True):
        response = post(service, "/predict", files={"image": ("d.png", png_bytes(image), "image/png")})
        assert response.status_code == 200, response.text
        assert_matches_openapi(spec, "POST", "/predict", response)
        for p in response.json()["predictions"]:
            assert len(p["probabilities"]) == 10
            assert abs(sum(p["probabilities"]) - 1.0) < 1e-3
            assert p["inference_ms"] > 0
            correct[p["model"]] += p["label"] == label
    for model, count in correct.items():
        assert count >= MIN_RIGHT_OF_20, f"{model} got {count}/20 uploaded digits right"


def test_predict_json_pixels_and_model_choice(service, digits):
    images, labels = digits
    correct = 0
    model = service.models[-1]
    for image, label in zip(images, labels, strict=True):
        pixels = (image / 255.0).tolist()
        response = post(service, f"/predict?model={model}", json={"pixels": pixels})
        predictions = response.json()["predictions"]
        assert [p["model"] for p in predictions] == [model]
        correct += predictions[0]["label"] == label
    assert correct >= MIN_RIGHT_OF_20
    service.state["pixels_answer"] = post(service, "/predict", json={"pixels": (images[0] / 255.0).tolist()}).json()



def test_raw_float32_tensor_body_matches_json_pixels(service, digits):
    """The gateway's compact hop: N images as raw float32 bytes give the same answers as JSON pixels."""
    import numpy as np

    from servekit.tensor_body import TENSOR_MEDIA_TYPE, input_to_tensor

    images = digits[0][:3] / 255.0
    headers = {"Content-Type": TENSOR_MEDIA_TYPE}
    response = post(service, "/predict", data=input_to_tensor(images), headers=headers)
    assert response.status_code == 200, response.text
    by_model = {}
    for p in response.json()["predictions"]:
        by_model.setdefault(p["model"], []).append(p["probabilities"])
    assert sorted(by_model) == sorted(service.models)
    for i, image in enumerate(images):
        single = post(service, "/predict", json={"pixels": image.tolist()}).json()["predictions"]
        for p in single:
            assert by_model[p["model"]][i] == pytest.approx(p["probabilities"], abs=1e-5)
    for bad, fragment in ((b"\0" * 100, "whole number"), (input_to_tensor(np.full((1, 28, 28), 2.0)), "between")):
        refused = post(service, "/predict", data=bad, headers=headers)
        assert refused.status_code == 400 and fragment in refused.json()["error"]


def test_concurrent_predictions_are_batched_and_answered_as_alone(service, digits):
    """Dynamic batching: under concurrency, answers equal the one-at-a-time ones and some model calls batch."""
    from concurrent.futures import ThreadPoolExecutor

    images = digits[0][:16] / 255.0
    model = service.models[0]
    alone = [post(service, f"/predict?model={model}", json={"pixels": im.tolist()}).json()["predictions"][0]
             for im in images]
    before = scrape(service)

    def ask(i: int) -> dict:
        return post(service, f"/predict?model={model}", json={"pixels": images[i % 16].tolist()}).json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(96)))
    for i, answer in enumerate(answers):
        p = answer["predictions"][0]
        assert p["label"] == alone[i % 16]["label"]
        assert p["probabilities"] == pytest.approx(alone[i % 16]["probabilities"], abs=1e-5)
    after, key = scrape(service), (("model", model),)
    calls = after[("model_batch_size_count", key)] - before[("model_batch_size_count", key)]
    images_run = after[("model_batch_size_sum", key)] - before[("model_batch_size_sum", key)]
    assert images_run == 96
    assert calls < 96, "96 requests from 16 threads never shared a model call"
    assert max(a["predictions"][0]["batch_size"] for a in answers) > 1
    health = get(service, "/health").json()
    assert health["batching"] == {"max_batch": 32, "window_ms": 2.0, "enabled": True}


def test_parallel_evaluations_equal_the_sequential_result(service):
    """Two evaluations of one model at once (Keras keeps metric state in the model) give the sequential figures."""
    from concurrent.futures import ThreadPoolExecutor

    model = service.models[0]
    sequential = post(service, "/evaluate", json={"model": model, "limit": 3000}).json()["results"][0]
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            answers = list(pool.map(lambda _: post(service, "/evaluate", json={"model": model, "limit": 3000}),
                                    range(2)))
            for answer in answers:
                assert answer.status_code == 200, answer.text
                result = answer.json()["results"][0]
                assert result["accuracy"] == pytest.approx(sequential["accuracy"], abs=1e-9)
                assert result["loss"] == pytest.approx(sequential["loss"], rel=1e-5)

@pytest.mark.parametrize(
    "kwargs, status, fragment",
    [
        ({"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "valid JSON"),
        ({"json": {"digits": []}}, 400, "pixels"),
        ({"json": {"pixels": [[0.5] * 3]}}, 400, "28x28"),
        ({"files": {"image": ("x.txt", b"hello, not an image", "text/plain")}}, 415, "not an image"),
        ({"files": {"other": ("x.png", b"\x89PNG", "image/png")}}, 400, "'image'"),
        ({"data": b"plain text", "headers": {"Content-Type": "text/plain"}}, 415, "multipart"),
        ({"files": {"image": ("big.png", b"\0" * (11 * 1024 * 1024), "image/png")}}, 413, "limit"),
    ],
)
def test_predict_rejects_bad_input_with_json_errors(service, kwargs, status, fragment, spec):
    response = post(service, "/predict", **kwargs)
    assert response.status_code == status, response.text
    assert_matches_openapi(spec, "POST", "/predict", response)
    assert fragment in response.json()["error"]


@pytest.mark.parametrize(
    "method, path, body, status",
    [
        ("post", "/train", {"epochs": 0}, 400),
        ("post", "/train", {"epochs": "five"}, 400),
        ("post", "/train", {"model": "no-such-model"}, 404),
        ("post", "/evaluate", {"model": "no-such-model"}, 404),
        ("post", "/evaluate", {"limit": -3}, 400),
        ("get", "/train/does-not-exist", None, 404),
        ("get", "/no/such/path", None, 404),
        ("post", "/v2/models/no-such-model/infer", {"inputs": []}, 404),
    ],
)
def test_bad_requests_get_json_errors(service, method, path, body, status):
    response = getattr(API, method)(service.url + path, json=body, timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_open_inference_protocol_infer_matches_predict(service, digits):
    images, labels = digits
    model = service.models[0]
    assert get(service, "/v2/health/live").status_code == 200
    assert get(service, "/v2/health/ready").status_code == 200
    meta = get(service, f"/v2/models/{model}").json()
    assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 28, 28, 1]}
    assert meta["outputs"][0]["name"] == "probabilities"
    x = (images[:4] / 255.0).reshape(4, 28, 28, 1)
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [4, 28, 28, 1], "data": x.ravel().tolist()}]}
    output = post(service, f"/v2/models/{model}/infer", json=body).json()["outputs"][0]
    assert output["shape"] == [4, 10]
    first = output["data"][:10]
    predicted = post(service, f"/predict?model={model}", json={"pixels": x[0, :, :, 0].tolist()}).json()
    assert predicted["predictions"][0]["probabilities"] == pytest.approx(first, abs=1e-5)


def test_tritonclient_works_unchanged(service, digits):
    """The standard Open Inference Protocol client: readiness, metadata and infer on every model."""
    import numpy as np
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=service.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    images, labels = digits
    x = (images[:8] / 255.0).astype(np.float32).reshape(8, 28, 28, 1)
    for model in service.models:
        assert client.is_model_ready(model)
        metadata = client.get_model_metadata(model)
        assert metadata["name"] == model and metadata["inputs"][0]["datatype"] == "FP32"
        request = triton.InferInput("input", list(x.shape), "FP32")
        request.set_data_from_numpy(x, binary_data=False)
        output = triton.InferRequestedOutput("probabilities", binary_data=False)
        probabilities = client.infer(model, [request], outputs=[output]).as_numpy("probabilities")
        assert probabilities.shape == (8, 10)
        predicted = post(service, f"/predict?model={model}", json={"pixels": x[3, :, :, 0].tolist()}).json()
        assert predicted["predictions"][0]["probabilities"] == pytest.approx(probabilities[3].tolist(), abs=1e-5)
        assert (probabilities.argmax(1) == labels[:8]).mean() >= 0.6
    with pytest.raises(Exception, match="unknown model"):
        client.get_model_metadata("no-such-model")


def scrape(service) -> dict[tuple[str, tuple], float]:
    """The service's /metrics, parsed: (sample name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = get(service, "/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_move_with_requests(service, digits):
    before = scrape(service)
    post(service, "/predict", json={"pixels": (digits[0][0] / 255.0).tolist()})
    after = scrape(service)
    request_key = ("http_requests_total", (("endpoint", "/predict"), ("method", "POST"), ("status", "200")))
    assert after[request_key] == before.get(request_key, 0) + 1
    for model in service.models:
        predictions = ("model_predictions_total", (("model", model),))
        assert after[predictions] == before[predictions] + 1
        inference = ("model_inference_duration_seconds_count", (("model", model),))
        assert after[inference] == before[inference] + 1
        assert after[("model_ready", (("model", model),))] == 1.0
        assert 0.5 < after[("model_test_accuracy", (("model", model),))] <= 1.0
    assert after[("training_jobs", (("state", "succeeded"),))] == 1.0
    assert after[("training_epoch", ())] == 0.0  # idle


def test_openapi_covers_every_route(service, spec):
    from openapi_spec_validator import validate

    validate(spec)  # a valid OpenAPI 3.0 document
    assert spec["openapi"].startswith("3.")
    for path in ("/health", "/models", "/train", "/train/{job_id}", "/evaluate", "/predict", "/metrics",
                 "/v2/models/{name}/infer"):
        assert path in spec["paths"], path
    assert "requestBody" in spec["paths"]["/train"]["post"]


def test_restart_loads_checkpoint_with_identical_predictions(service, digits):
    before = service.state["pixels_answer"]
    service.stop()
    service.start()
    models = get(service, "/models").json()["models"]
    assert all(m["ready"] for m in models)
    after = post(service, "/predict", json={"pixels": (digits[0][0] / 255.0).tolist()}).json()
    assert [p["probabilities"] for p in after["predictions"]] == [p["probabilities"] for p in before["predictions"]]


def test_first_batch_shows_real_training_digits_of_the_models_own_pipeline(service, mnist):
    """Each model's first training batch: real MNIST training digits, reproducible for a seed, hashed."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    train = {image.tobytes(): label for image, label in zip(mnist.train.images, mnist.train.labels, strict=True)}
    for model in service.models:
        first = get(service, f"/data/first-batch?model={model}&seed=7").json()
        assert first["model"] == model and first["batch_size"] == 128 and len(first["labels"]) == 128
        grid = np.asarray(Image.open(io.BytesIO(base64.b64decode(first["png"]))))
        assert grid.shape == (8 * 28, 16 * 28)
        for i in range(16):  # the first row of tiles: training digits, with the labels the batch gives them
            row, column = divmod(i, 16)
            tile = grid[row * 28:(row + 1) * 28, column * 28:(column + 1) * 28]
            assert train.get(tile.tobytes()) == first["labels"][i], f"{model}: tile {i} is not that training digit"
        again = get(service, f"/data/first-batch?model={model}&seed=7").json()
        other = get(service, f"/data/first-batch?model={model}&seed=8").json()
        assert again["sha256"] == first["sha256"]
        if "arrays" in first["pipeline"]:  # Keras: the arrays fit is given, in order
            assert first["labels"] == mnist.train.labels[:128].tolist()
        else:  # a shuffling pipeline: another seed, another batch
            assert other["sha256"] != first["sha256"]
    assert get(service, "/data/first-batch?seed=-1").status_code == 400

def test_refused_requests_still_carry_their_request_id(service):
    """Token and media-type checks run after the request got its id: a 401 or 415 can be traced too."""
    refused = requests.post(service.url + "/train", json={}, headers={"X-Request-ID": "trace-me-1"}, timeout=30)
    assert refused.status_code == 401 and refused.headers["X-Request-ID"] == "trace-me-1"
    wrong_type = API.post(service.url + "/evaluate", data="x", headers={"Content-Type": "text/plain"}, timeout=30)
    assert wrong_type.status_code == 415 and wrong_type.headers["X-Request-ID"]
