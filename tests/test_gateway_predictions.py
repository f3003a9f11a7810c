"""How the gateway splits a batched fan-out's answers back by upload, and the batch's combined request id."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gateway.clients import Reply, ServiceError
from gateway.predictions import MAX_IDS_HEADER_CHARS, PredictionFanOut, combined_request_id
from servekit.testing import authorized, png_bytes, wait_for_job
from tests.conftest import start_gateway, start_service

API = authorized()


class KnownModels:
    """The one thing the splitting asks the service directory: a failed service's model names."""

    def models_of(self, service: str) -> list[str]:
        return {"keras": ["keras-sequential", "keras-functional"]}.get(service, [])


def fan_out() -> PredictionFanOut:
    return PredictionFanOut(KnownModels(), timeout_s=5.0, max_batch=16, window_s=0.002)


def answer(*predictions: dict) -> Reply:
    return Reply({"predictions": list(predictions)}, roundtrip_ms=1.5)


def row(model: str, label: int) -> dict:
    return {"model": model, "label": label, "probabilities": [0.1] * 10, "inference_ms": 0.5}


def test_rows_go_back_to_their_images_model_by_model():
    reply = answer(row("keras-sequential", 1), row("keras-sequential", 2), row("keras-sequential", 3),
                   row("keras-functional", 4), row("keras-functional", 5), row("keras-functional", 6))
    rows = fan_out()._entries_by_image("keras", reply, 3)
    assert [[(e["model"], e["label"]) for e in image] for image in rows] == [
        [("keras-sequential", 1), ("keras-functional", 4)],
        [("keras-sequential", 2), ("keras-functional", 5)],
        [("keras-sequential", 3), ("keras-functional", 6)],
    ]
    assert all(e["service"] == "keras" and e["roundtrip_ms"] == 1.5 for image in rows for e in image)


def test_a_not_ready_model_says_so_to_every_image():
    reply = answer(row("keras-sequential", 1), row("keras-sequential", 2),
                   {"model": "keras-functional", "error": "not trained yet"})
    rows = fan_out()._entries_by_image("keras", reply, 2)
    for image in rows:
        assert [e.get("label", e.get("error")) for e in image] == [image[0]["label"], "not trained yet"]
    assert rows[0][1] is not rows[1][1]  # each answer owns its entries


def test_too_few_or_too_many_rows_give_errors_never_a_neighbours_row():
    reply = answer(row("torch", 1), row("torch", 2))  # two rows for three images: which is whose?
    rows = fan_out()._entries_by_image("torch", reply, 3)
    error = {"model": "torch", "service": "torch", "error": "torch answered 2 rows of torch for 3 images"}
    assert rows == [[error]] * 3
    extra = fan_out()._entries_by_image("torch", answer(row("torch", 1), row("torch", 9)), 1)
    assert extra == [[{"model": "torch", "service": "torch", "error": "torch answered 2 rows of torch for 1 images"}]]
    mixed = fan_out()._entries_by_image("keras", answer(row("keras-sequential", 1), row("keras-functional", 2),
                                                        row("keras-functional", 3)), 1)
    assert [e.get("label", "error") for e in mixed[0]] == [1, "error"]  # the model that matched still answers


def test_a_failed_call_gives_every_image_an_error_per_model():
    rows = fan_out()._entries_by_image("keras", ServiceError("keras is unreachable"), 2)
    assert [[e["model"] for e in image] for image in rows] == [["keras-sequential", "keras-functional"]] * 2
    assert all(e["error"] == "keras is unreachable" for image in rows for e in image)


def test_the_combined_request_id_stays_within_the_header_limit():
    assert combined_request_id(["only-one"]) == "only-one"
    assert combined_request_id(["a", "b", "c"]) == "a,b,c"
    assert combined_request_id(["x" * 500]) == "x" * 64
    many = combined_request_id(["y" * 64] * 200)
    assert len(many) == MAX_IDS_HEADER_CHARS and many.endswith("...")


def test_the_batch_limit_is_bounded(monkeypatch):
    from gateway.settings import MAX_BATCH_LIMIT, GatewaySettings

    monkeypatch.setenv("GATEWAY_MAX_BATCH", "100000")
    assert GatewaySettings.from_env().max_batch == MAX_BATCH_LIMIT
    monkeypatch.setenv("GATEWAY_MAX_BATCH", "0")
    assert GatewaySettings.from_env().max_batch == 1
    assert np.isfinite(MAX_BATCH_LIMIT)


def test_a_service_refusing_a_batch_still_answers_each_upload_alone(tmp_path, digits):
    """A torch service that takes one image per call (MAX_INFER_BATCH=1) behind the gateway: concurrent uploads
    that went out as one fan-out are refused as a batch (400) and asked again one by one, so every upload gets
    the torch model's answer, not an error."""
    service = start_service("torch", tmp_path / "models", MAX_INFER_BATCH="1")
    gateway = None
    try:
        job = API.post(service.url + "/train", json={"model": "torch", "epochs": 1, "train_limit": 1000}, timeout=30)
        assert wait_for_job(service.url + job.json()["status_url"], timeout=600)["status"] == "succeeded"
        gateway = start_gateway({"torch": service.url}, tmp_path / "gateway")
        images, _ = digits
        sizes = []
        for _ in range(3):  # until a fan-out carries several uploads (one round nearly always does)
            barrier = threading.Barrier(10)

            def ask(index, barrier=barrier):
                barrier.wait(30)
                png = {"image": ("digit.png", png_bytes(images[index]), "image/png")}
                return API.post(gateway.url + "/predict", files=png, timeout=120)

            with ThreadPoolExecutor(10) as pool:
                answers = list(pool.map(ask, range(10)))
            for response in answers:
                assert response.status_code == 200, response.text
                by_model = {p["model"]: p for p in response.json()["predictions"]}
                assert "label" in by_model["torch"], by_model  # the torch model's answer, not the batch's refusal
                sizes.append(response.json()["batch"]["images"])
            if max(sizes) > 1:
                break
        assert max(sizes) > 1, sizes
        refused = [line for line in service.log_tail(2000).splitlines() if '"status": 400' in line]
        assert refused, "no batched call was refused: the test did not exercise the retry"
    finally:
        if gateway:
            gateway.stop()
        service.stop()
