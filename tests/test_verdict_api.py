"""Repeats and the verdict through the gateway, over real HTTP: a 3-seed run, /compare's statistics, the gallery.

One stack (three services, ROLE=all, and a gateway) trains every model on a small training set once per seed.
"""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
import requests
from PIL import Image

from servekit.testing import assert_matches_openapi, authorized
from tests.conftest import SERVICES

API = authorized()
SEEDS = [0, 1, 2]
ALL_MODELS = [model for _, models in SERVICES.values() for model in models]
MODELS = len(ALL_MODELS)


@pytest.fixture(scope="module")
def trained(stack):
    """The stack after a run over three seeds."""
    stack.state["run"] = run_to_the_end(stack, {"epochs": 1, "train_limit": 1500, "seeds": SEEDS})
    return stack


def run_to_the_end(stack, body: dict, timeout: float = 900) -> dict:
    """Start a run through the gateway and wait for it to succeed; its final status."""
    response = API.post(stack.url + "/train", json=body, timeout=30)
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    deadline = time.monotonic() + timeout
    while (run := requests.get(f"{stack.url}/runs/{run_id}", timeout=30).json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, run
        time.sleep(1)
    assert run["status"] == "succeeded", run
    return run


def compare_when_judged(url: str, timeout: float = 600) -> requests.Response:
    """GET /compare once its verdict is no longer being computed in the background."""
    deadline = time.monotonic() + timeout
    while (response := requests.get(url + "/compare", timeout=30)).json()["verdict"] == {"status": "computing"}:
        assert time.monotonic() < deadline, "the verdict was not computed in time"
        time.sleep(0.5)
    return response


def test_every_model_trained_once_per_seed(trained):
    run = trained.state["run"]
    assert run["config"]["seeds"] == SEEDS and run["progress"] == 1.0
    for entry in run["models"].values():
        assert [r["seed"] for r in entry["seed_results"]] == SEEDS
        assert all(r["status"] == "succeeded" and 0 < r["test_accuracy"] <= 1 for r in entry["seed_results"])
        versions = [r["version"] for r in entry["seed_results"]]
        assert versions == sorted(set(versions)), "each seed writes its own version"


def test_seeds_are_refused_when_malformed(stack):
    for body in ({"seeds": []}, {"seeds": [1, 1]}, {"seeds": ["0"]}, {"seeds": [0], "seed": 3},
                 {"seeds": list(range(11))}):
        response = API.post(stack.url + "/train", json=body, timeout=30)
        assert response.status_code == 400, (body, response.text)


def test_compare_reports_spread_over_seeds_intervals_and_the_verdict(trained):
    spec = requests.get(trained.url + "/openapi.json", timeout=30).json()
    response = compare_when_judged(trained.url)
    assert_matches_openapi(spec, "GET", "/compare", response)
    comparison = response.json()
    run = trained.state["run"]
    rows = {row["model"]: row for row in comparison["models"]}
    assert len(rows) == MODELS
    for name, row in rows.items():
        accuracies = [r["test_accuracy"] for r in run["models"][name]["seed_results"]]
        assert row["seeds"] == SEEDS
        assert row["accuracy_mean"] == pytest.approx(np.mean(accuracies), abs=1e-6)
        assert row["accuracy_sd"] == pytest.approx(np.std(accuracies, ddof=1), abs=1e-6)
        assert row["accuracy_min"] == min(accuracies) and row["accuracy_max"] == max(accuracies)
        low, high = row["ci95"]
        assert low < row["test_correct"] / 10_000 < high and high - low < 0.05
    verdict = comparison["verdict"]
    assert len(verdict["pairs"]) == MODELS * (MODELS - 1) // 2
    for pair in verdict["pairs"]:
        assert 0 <= pair["p_value"] <= pair["p_adjusted"] <= 1
        assert pair["significant"] == (pair["p_adjusted"] < 0.05)
    assert isinstance(verdict["summary"], str) and verdict["summary"]
    trained.state["comparison"] = comparison


def test_pair_counts_match_the_services_own_per_image_answers(trained):
    """a_only and b_only recounted from each service's per-image answers on the 10,000 test images."""
    comparison = trained.state["comparison"]
    rows = {row["model"]: row for row in comparison["models"]}
    pair = comparison["verdict"]["pairs"][0]
    answers = {}
    for model in (pair["a"], pair["b"]):
        service = trained.services[rows[model]["service"]]
        result = API.post(service.url + "/evaluate", json={"model": model, "per_image": True},
                          timeout=300).json()["results"][0]
        assert len(result["predicted"]) == len(result["confidence"]) == len(result["labels"]) == 10_000
        assert result["accuracy"] == pytest.approx(np.mean(np.array(result["predicted"]) == result["labels"]),
                                                   abs=1e-4)
        answers[model] = np.array(result["predicted"]) == np.array(result["labels"])
    right_a, right_b = answers[pair["a"]], answers[pair["b"]]
    assert pair["a_only"] == int((right_a & ~right_b).sum())
    assert pair["b_only"] == int((right_b & ~right_a).sum())


def test_disagreement_gallery_lists_split_digits_with_their_images(trained):
    response = requests.get(trained.url + "/compare/disagreements?limit=20", timeout=300)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["models"]) == MODELS and body["count"] == len(body["disagreements"]) > 0
    service = next(iter(trained.services.values()))
    splits = []
    for entry in body["disagreements"]:
        labels = {p["label"] for p in entry["predictions"].values()}
        assert len(entry["predictions"]) == MODELS and len(labels) > 1
        splits.append(len(labels))
        image = Image.open(io.BytesIO(base64.b64decode(entry["image"].removeprefix("data:image/png;base64,"))))
        assert image.size == (28, 28)
        truth = requests.get(f"{service.url}/data/test?indices={entry['index']}", timeout=30).json()["images"][0]
        assert truth["label"] == entry["label"]
    assert splits == sorted(splits, reverse=True), "most split first"
    assert requests.get(trained.url + "/compare/disagreements?limit=0", timeout=30).status_code == 400


@pytest.mark.parametrize("source", ALL_MODELS)
def test_one_networks_weights_give_the_same_answers_in_every_framework(trained, source):
    """Each model's weights transplanted into every implementation: every pair, in both directions."""
    response = API.post(trained.url + "/parity", json={"source": source, "limit": 2000}, timeout=600)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["source"] == source and result["images"] == 2000 and result["errors"] == []
    targets = {t["model"]: t for t in result["targets"]}
    assert len(targets) == MODELS
    assert targets[source]["max_abs_diff"] == 0.0 and targets[source]["agreement"] == 1.0
    for target in targets.values():
        assert target["max_abs_diff"] < 1e-4, target  # float32 in every implementation; the goal is 1e-5
        assert target["agreement"] >= 0.999, target
    assert result["within_tolerance"] == (result["max_abs_diff"] <= result["tolerance"])
    rows = {row["model"]: row for row in trained.state["comparison"]["models"]}
    assert abs(targets[source]["accuracy"] - rows[source]["test_correct"] / 10_000) < 0.05


def test_parity_refuses_an_unknown_source(stack):
    assert API.post(stack.url + "/parity", json={"source": "no-such-model"}, timeout=30).status_code == 404
    assert API.post(stack.url + "/parity", json={}, timeout=30).status_code == 400


def test_same_start_gives_every_pipeline_the_same_first_batch(stack):
    """Under same_start every framework's own pipeline yields the shared order: the same first batch, bit for bit."""
    shared = requests.get(stack.url + "/data/first-batch?seed=3&same_start=true", timeout=300).json()
    assert shared["same_start"] is True and len(shared["batches"]) == MODELS
    assert len({b["sha256"] for b in shared["batches"]}) == 1, [(b["model"], b["pipeline"]) for b in shared["batches"]]
    assert len({tuple(b["labels"]) for b in shared["batches"]}) == 1
    own = requests.get(stack.url + "/data/first-batch?seed=3", timeout=300).json()
    by_model = {b["model"]: b["sha256"] for b in own["batches"]}
    assert by_model["torch"] != by_model["tf-native"], "without same_start each framework shuffles its own way"
    assert requests.get(stack.url + "/data/first-batch?same_start=yes", timeout=30).status_code == 400


def test_same_start_begins_every_framework_from_the_same_weights(trained):
    """A run with same_start and a vanishing learning rate: every model's weights stay at the shared start."""
    from servekit.weights import initial_weights

    body = {"epochs": 2, "train_limit": 64, "batch_size": 64, "learning_rate": 1e-7, "seed": 11, "same_start": True}
    run = run_to_the_end(trained, body, timeout=600)
    assert run["config"]["same_start"] is True
    start = initial_weights(11)
    comparison = requests.get(trained.url + "/compare", timeout=600).json()
    for row in comparison["models"]:
        service = trained.services[row["service"]]
        exported = requests.get(f"{service.url}/models/{row['model']}/weights", timeout=60).json()
        weights = np.load(io.BytesIO(base64.b64decode(exported["npz"])))
        for name, value in start.items():
            # Two Adam steps of 1e-7 move a weight by about 2e-7: far below the spread of two random starts.
            assert np.abs(weights[name] - value).max() < 1e-5, (row["model"], name)
