"""Malformed, oversized and sloppy input is a 400 with a reason, over real HTTP, on a service and the gateway;
one untrained model does not silence its trained sibling."""

from __future__ import annotations

import json

import pytest
import requests

from servekit.testing import authorized, wait_for_job

API = authorized()
BLANK = [[0.0] * 28 for _ in range(28)]
DEEP = "[" * 5000 + "]" * 5000


@pytest.fixture(scope="module")
def keras_half_trained(tmp_path_factory, role_factory, gateway_factory):
    """A keras service with only keras-sequential trained, and a gateway in front of it."""
    service = role_factory("keras", tmp_path_factory.mktemp("strict-keras") / "repository", "all")
    accepted = API.post(service.url + "/train", json={"model": "keras-sequential", "epochs": 1, "train_limit": 1000},
                        timeout=30).json()
    assert wait_for_job(service.url + accepted["status_url"], timeout=600)["status"] == "succeeded"
    gateway = gateway_factory({"keras": service.url}, tmp_path_factory.mktemp("strict-gateway"))
    yield service, gateway
    gateway.stop()
    service.stop()


def post_raw(url, text):
    return API.post(url, data=text, headers={"Content-Type": "application/json"}, timeout=30)


def test_too_deep_json_is_a_400_everywhere(keras_half_trained):
    service, gateway = keras_half_trained
    for url in (service.url + "/predict", service.url + "/train", service.url + "/v2/models/keras-sequential/infer",
                gateway.url + "/predict", gateway.url + "/train"):
        response = post_raw(url, '{"pixels": ' + DEEP + "}")
        assert response.status_code == 400, (url, response.status_code)
        assert response.json()["error"]


@pytest.mark.parametrize("pixels, fragment", [
    ([["0.5"] * 28] * 28, "numbers between 0 and 1"),
    ([[True] * 28] * 28, "numbers between 0 and 1"),
    ([[10**400] + [0] * 27] + BLANK[1:], "numbers between 0 and 1"),
    (BLANK[:27], "28x28"),
])
def test_pixels_must_be_numbers(keras_half_trained, pixels, fragment):
    service, gateway = keras_half_trained
    for url in (service.url, gateway.url):
        response = post_raw(url + "/predict", json.dumps({"pixels": pixels}))
        assert response.status_code == 400 and fragment in response.json()["error"], response.text


def test_open_inference_protocol_refuses_what_would_overflow(keras_half_trained):
    service, _ = keras_half_trained
    url = service.url + "/v2/models/keras-sequential/infer"
    for data in ([3e38] * 784, [10**400] + [0] * 783, ["0.5"] * 784, [True] * 784):
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": data}]}
        response = post_raw(url, json.dumps(body))
        assert response.status_code == 400, (data[0], response.text)
        json.loads(response.text, parse_constant=lambda c: pytest.fail(f"{c} in a JSON answer"))


def test_unknown_fields_and_repeated_models_are_refused(keras_half_trained):
    service, gateway = keras_half_trained
    typo = API.post(service.url + "/train", json={"epoch": 50}, timeout=30)
    assert typo.status_code == 400 and "'epoch'" in typo.json()["error"] and "epochs" in typo.json()["error"]
    assert API.post(gateway.url + "/train", json={"epoch": 50}, timeout=30).status_code == 400
    assert API.post(service.url + "/evaluate", json={"limt": 5}, timeout=30).status_code == 400
    assert post_raw(service.url + "/predict", json.dumps({"pixels": BLANK, "extra": 1})).status_code == 400
    for path in ("/train", "/evaluate", "/benchmark"):
        repeated = API.post(gateway.url + path, json={"models": ["keras-sequential"] * 3}, timeout=30)
        assert repeated.status_code == 400 and "more than once" in repeated.json()["error"], path


def test_training_work_is_bounded(keras_half_trained):
    service, _ = keras_half_trained
    huge_batch = API.post(service.url + "/train", json={"batch_size": 60_000}, timeout=30)
    assert huge_batch.status_code == 400 and "batch_size" in huge_batch.json()["error"]
    endless = API.post(service.url + "/train", json={"epochs": 100, "batch_size": 1}, timeout=30)
    assert endless.status_code == 400 and "steps" in endless.json()["error"]


def test_the_trained_model_answers_while_its_sibling_is_not_ready(keras_half_trained):
    service, gateway = keras_half_trained
    answer = API.post(service.url + "/predict", json={"pixels": BLANK}, timeout=30)
    assert answer.status_code == 200, answer.text
    entries = {p["model"]: p for p in answer.json()["predictions"]}
    assert "label" in entries["keras-sequential"] and entries["keras-sequential"]["model_version"] == 1
    assert "not trained" in entries["keras-functional"]["error"]
    through = API.post(gateway.url + "/predict", json={"pixels": BLANK}, timeout=30).json()
    assert through["consensus"]["of"] == 1 and through["consensus"]["votes"] == 1  # the answers, not the errors
    only = API.post(service.url + "/predict?model=keras-functional", json={"pixels": BLANK}, timeout=30)
    assert only.status_code == 503


def test_metric_labels_stay_bounded(keras_half_trained):
    service, _ = keras_half_trained
    requests.request("BREW", service.url + "/health", timeout=10)
    text = requests.get(service.url + "/metrics", timeout=10).text
    assert 'method="BREW"' not in text and 'method="other"' in text
