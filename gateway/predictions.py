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

from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager

import numpy as np

from servekit.batching import BatchResult, DynamicBatcher
from servekit.observability import REQUEST_ID_HEADER
from servekit.tensor_body import TENSOR_MEDIA_TYPE, input_to_tensor

from .clients import Reply, ServiceDirectory, ServiceError

MAX_ID_CHARS = 64  # of each request id in a batch's combined X-Request-ID (the header stays far below limits)


class PredictionFanOut:
    """Every model's prediction for images, concurrent requests batched into one fan-out.

    ``max_batch`` images per fan-out at most (GATEWAY_MAX_BATCH; at most the services' MAX_INFER_BATCH),
    ``window_s`` the longest wait for uploads still being decoded (0 turns batching off);
    ``on_batch(images)`` is told the size of every fan-out.
    """

    def __init__(self, directory: ServiceDirectory, timeout_s: float, max_batch: int, window_s: float,
                 on_batch: Callable[[int], None] | None = None):
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
        body = input_to_tensor(images)
        # The services log the id: one request's id as it is, a batch's ids comma-separated.
        headers = {REQUEST_ID_HEADER: ",".join(rid[:MAX_ID_CHARS] for rid in request_ids),
                   "Content-Type": TENSOR_MEDIA_TYPE}
        answers = self.directory.fan_out(
            lambda client: client.call("POST", "/predict", self.timeout_s, headers=headers, data=body)
        )
        rows: list[list[dict]] = [[] for _ in range(len(images))]
        for service, answer in answers.items():
            for row, entries in zip(rows, self._entries_by_image(service, answer, len(images)), strict=True):
                row.extend(entries)
        return rows, None

    def _entries_by_image(self, service: str, answer: Reply | Exception, images: int) -> list[list[dict]]:
        """A service's answer for ``images`` images as each image's entries; error entries go to every image."""
        if isinstance(answer, Exception):
            errors = error_entries(self.directory, service, answer)
            return [[dict(entry) for entry in errors] for _ in range(images)]
        rows: list[list[dict]] = [[] for _ in range(images)]
        seen: Counter[str] = Counter()  # a service answers model by model, each model's rows in image order
        roundtrip_ms = round(answer.roundtrip_ms, 3)
        for prediction in answer.body["predictions"]:
            entry = {**prediction, "service": service, "roundtrip_ms": roundtrip_ms}
            if "error" in prediction:  # a model that is not ready says so once, for every image
                for row in rows:
                    row.append(dict(entry))
                continue
            index = seen[prediction["model"]]
            seen[prediction["model"]] += 1
            if index < images:
                rows[index].append(entry)
        return rows


def error_entries(directory: ServiceDirectory, service: str, error: Exception) -> list[dict]:
    """An error entry per model of a service whose call failed."""
    if isinstance(error, ServiceError):
        models = directory.models_of(service) or [service]
        return [{"model": m, "service": service, "error": str(error)} for m in models]
    return [{"model": service, "service": service, "error": f"{type(error).__name__}: {error}"}]
