"""The gateway's /predict fan-out: concurrent uploads share one call per service (dynamic batching).

A lone upload is sent to every service at once, as before. Uploads that arrive
while a fan-out is in flight queue (servekit.batching, the batcher the services
run per model) and go out together as the next one: one call per service
carries all their images as one raw float32 body, the services' answers are
split back by image, and each request gets only its own rows. Under load that
turns N requests' N x services calls into services calls, which is most of what
the gateway spends per request; the services then run one model call per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np

from servekit.batching import BatchResult, DynamicBatcher
from servekit.observability import REQUEST_ID_HEADER
from servekit.tensor_body import TENSOR_MEDIA_TYPE, input_to_tensor

from .clients import Reply, ServiceDirectory, ServiceError

MAX_ID_CHARS = 64  # of each request id in a batch's combined X-Request-ID
MAX_IDS_HEADER_CHARS = 4096  # the combined header at most: half of gunicorn's 8,190-byte limit per header field


class PredictionFanOut:
    """Every model's prediction for images, concurrent requests batched into one fan-out.

    ``max_batch`` images per fan-out at most (GATEWAY_MAX_BATCH; at most the services' MAX_INFER_BATCH),
    ``window_s`` the longest wait for uploads still being decoded (0 turns batching off);
    ``on_batch(images, seconds)`` is told the size and duration of every fan-out.
    """

    def __init__(self, directory: ServiceDirectory, timeout_s: float, max_batch: int, window_s: float,
                 on_batch: Callable[[int, float], None] | None = None):
        self.directory, self.timeout_s = directory, timeout_s
        self.batcher = DynamicBatcher(self._fan_out, max_batch, window_s, on_batch=on_batch)

    def incoming(self) -> AbstractContextManager[None]:
        """Around decoding an upload: a fan-out that is forming waits for it (briefly)."""
        return self.batcher.incoming()

    def predict(self, x: np.ndarray, request_id: str) -> tuple[list[dict], BatchResult]:
        """Every model's entries for the images ``x`` (N, 28, 28, 1), and the batch they went out in."""
        result = self.batcher.predict(x, request_id)
        return [entry for row in result.outputs for entry in row], result

    def _fan_out(self, images: np.ndarray, request_ids: list[str]) -> tuple[list[list[dict]], None]:
        """One call per service with all the images; each image's entries (a row per image)."""
        body = input_to_tensor(images)  # once, the same bytes for every service
        answers = self.directory.post_to_each("/predict", body, self._headers(request_ids), self.timeout_s)
        rows: list[list[dict]] = [[] for _ in range(len(images))]
        for service, answer in answers.items():
            if len(images) > 1 and refused_the_batch(answer):
                # A refusal of the whole call (more images than the service's MAX_INFER_BATCH, one image's
                # non-finite output) must not fail the uploads it does not concern: each image is asked alone.
                by_image = [self._ask_alone(service, images[i:i + 1], request_ids[i]) for i in range(len(images))]
            else:
                by_image = self._entries_by_image(service, answer, len(images))
            for row, entries in zip(rows, by_image, strict=True):
                row.extend(entries)
        return rows, None

    @staticmethod
    def _headers(request_ids: list[str]) -> dict[str, str]:
        """The headers of a /predict call with images as raw float32 pixels, for the requests ``request_ids``."""
        return {REQUEST_ID_HEADER: combined_request_id(request_ids), "Content-Type": TENSOR_MEDIA_TYPE}

    def _ask_alone(self, service: str, image: np.ndarray, request_id: str) -> list[dict]:
        """One image's entries from one service, asked on its own."""
        client = self.directory.clients[service]
        try:
            answer = client.call("POST", "/predict", self.timeout_s, headers=self._headers([request_id]),
                                 data=input_to_tensor(image))
        except ServiceError as exc:
            answer = exc
        return self._entries_by_image(service, answer, 1)[0]

    def _entries_by_image(self, service: str, answer: Reply | Exception, images: int) -> list[list[dict]]:
        """A service's answer for ``images`` images as each image's entries; error entries go to every image."""
        if isinstance(answer, Exception):
            errors = error_entries(self.directory, service, answer)
            return [[dict(entry) for entry in errors] for _ in range(images)]
        roundtrip_ms = round(answer.roundtrip_ms, 3)
        by_model: dict[str, list[dict]] = {}  # a service answers model by model, each model's rows in image order
        for prediction in answer.body["predictions"]:
            entry = {**prediction, "service": service, "roundtrip_ms": roundtrip_ms}
            by_model.setdefault(prediction["model"], []).append(entry)
        rows: list[list[dict]] = [[] for _ in range(images)]
        for model, entries in by_model.items():
            errors = [entry for entry in entries if "error" in entry]  # a model not ready says so once
            if not errors and len(entries) == images:
                for row, entry in zip(rows, entries, strict=True):
                    row.append(entry)
                continue
            if not errors:  # rows that cannot be matched to the images: an error, never a neighbour's row
                errors = [{"model": model, "service": service,
                           "error": f"{service} answered {len(entries)} rows of {model} for {images} images"}]
            for row in rows:
                row.extend(dict(error) for error in errors)
        return rows


def refused_the_batch(answer: Reply | Exception) -> bool:
    """The service refused the call as a client error that may concern only some of its images.

    Not 429 (asking once per image would only add load) and not 5xx (down or not ready: the same for each).
    """
    status = answer.status if isinstance(answer, ServiceError) else None
    return status is not None and 400 <= status < 500 and status != 429


def combined_request_id(request_ids: list[str]) -> str:
    """The X-Request-ID of a batch's calls: its requests' ids, comma-separated (one request's id as it is).

    Each id is cut to MAX_ID_CHARS and the whole to MAX_IDS_HEADER_CHARS, so that no batch size or
    client-chosen id can make the services refuse the header (and with it every upload of the batch).
    """
    combined = ",".join(rid[:MAX_ID_CHARS] for rid in request_ids)
    return combined if len(combined) <= MAX_IDS_HEADER_CHARS else combined[:MAX_IDS_HEADER_CHARS - 3] + "..."


def error_entries(directory: ServiceDirectory, service: str, error: Exception) -> list[dict]:
    """An error entry per model of a service whose call failed."""
    if isinstance(error, ServiceError):
        models = directory.models_of(service) or [service]
        return [{"model": m, "service": service, "error": str(error)} for m in models]
    return [{"model": service, "service": service, "error": f"{type(error).__name__}: {error}"}]
