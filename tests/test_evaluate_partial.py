"""POST /evaluate on a service with one of its two models trained, over real HTTP: the trained one is evaluated
and the other says it is not trained, as /predict does; naming the untrained model, or having none trained,
is still a 503."""

from __future__ import annotations

import pytest
import requests

from servekit.testing import assert_matches_openapi, authorized, wait_for_job

API = authorized()
TRAINED, UNTRAINED = "keras-sequential", "keras-functional"


@pytest.fixture(scope="module")
def keras(tmp_path_factory, role_factory):
    """A keras service (ROLE=all), nothing trained yet."""
    service = role_factory("keras", tmp_path_factory.mktemp("evaluate-partial") / "repository", "all")
    yield service
    service.stop()


def evaluate(service, **body) -> requests.Response:
    return API.post(service.url + "/evaluate", json=body, timeout=300)


def test_with_nothing_trained_evaluate_is_a_503(keras):
    response = evaluate(keras, limit=100)
    assert response.status_code == 503 and "not trained" in response.json()["error"]


def test_the_trained_model_is_evaluated_and_the_other_says_why_not(keras):
    accepted = API.post(keras.url + "/train", json={"model": TRAINED, "epochs": 1, "train_limit": 2000},
                        timeout=30).json()
    assert wait_for_job(keras.url + accepted["status_url"], timeout=600)["status"] == "succeeded"

    response = evaluate(keras, limit=500, per_image=True)
    assert response.status_code == 200, response.text
    results = {entry["model"]: entry for entry in response.json()["results"]}
    assert list(results) == [TRAINED, UNTRAINED]  # the service's order, as in /predict
    ready = results[TRAINED]
    assert ready["model_version"] == 1 and ready["samples"] == 500 and 0.5 < ready["accuracy"] <= 1
    assert len(ready["labels"]) == len(ready["predicted"]) == len(ready["confidence"]) == 500
    missing = results[UNTRAINED]
    assert missing["model_version"] is None and "accuracy" not in missing and "labels" not in missing
    assert "not trained" in missing["error"] and UNTRAINED in missing["error"]
    assert missing["served_by"] == ready["served_by"]
    spec = requests.get(keras.url + "/openapi.json", timeout=10).json()
    assert_matches_openapi(spec, "POST", "/evaluate", response)

    # /predict answers the same way: the same entry for the untrained model.
    predicted = API.post(keras.url + "/predict", json={"pixels": [[0.0] * 28] * 28}, timeout=30).json()
    not_ready = next(p for p in predicted["predictions"] if p["model"] == UNTRAINED)
    assert {k: not_ready[k] for k in missing} == missing


def test_naming_the_untrained_model_is_still_a_503(keras):
    response = evaluate(keras, model=UNTRAINED, limit=100)
    assert response.status_code == 503 and UNTRAINED in response.json()["error"]
    assert evaluate(keras, model=TRAINED, limit=100).json()["results"][0]["model"] == TRAINED
