"""Transplants, service side: a served model's weights out, any weights into fresh instances of this service's models.

- ``GET /models/<name>/weights``: the serving version's weights, framework-neutral (``servekit.weights``),
  as a base64 ``.npz``.
- ``POST /parity`` ``{"weights": <base64 .npz>}``: every model of this service gets those weights in a fresh
  instance and scores the MNIST test images; the answer holds each model's probabilities (base64
  float32, images x 10) and the true labels. The gateway compares them across frameworks.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np
from flask import Blueprint, jsonify, request

from .errors import BadRequest
from .inputs import json_body, optional_int
from .mnist import to_model_input
from .openapi import documented
from .schemas import PARITY, PARITY_REQUEST, WEIGHTS
from .service import ModelService
from .serving import predict_in_batches
from .slots import Slots
from .weights import MAX_ARCHIVE_BYTES, from_npz, to_npz

MAX_BASE64_CHARS = 4 * -(-MAX_ARCHIVE_BYTES // 3)  # the base64 of the largest archive accepted


def parity_blueprint(service: ModelService) -> Blueprint:
    """The transplant routes of a serving role."""
    routes = Blueprint("parity", __name__)
    transplants = Slots(1, "transplants are")  # each builds fresh models and scores the whole test set

    @routes.get("/models/<name>/weights")
    @documented(response=WEIGHTS)
    def weights(name: str):
        """The serving version's weights in the framework-neutral layout (base64 .npz)."""
        served = service.select(name)[0]
        installed = served.current()
        archive = to_npz(installed.backend.export_weights())
        return jsonify(model=served.name, version=installed.version, framework=served.framework,
                       npz=base64.b64encode(archive).decode("ascii"))

    @routes.post("/parity")
    @documented(request_body={"application/json": PARITY_REQUEST}, response=PARITY)
    def parity():
        """Load the given weights into a fresh instance of every model here; their test-set probabilities."""
        body = json_body(request, required=True, allowed={"weights", "limit"})
        limit = optional_int(body, "limit", 1, 10_000)
        results = []
        with transplants.take():  # the archive is decoded in the slot too: concurrent uploads cannot add up
            weights = from_npz(_base64(body.get("weights")))
            test = service.require_data().test.head(limit)
            x = to_model_input(test.images)
            for served in service.models.values():
                backend = served.backend_class()
                backend.import_weights(weights)
                probabilities = predict_in_batches(backend, x).astype("<f4")
                results.append({"model": served.name, "framework": served.framework,
                                "probabilities": base64.b64encode(probabilities.tobytes()).decode("ascii")})
        return jsonify(images=len(test), labels=test.labels.tolist(), results=results)

    return routes


def _base64(value: object) -> bytes:
    if not isinstance(value, str) or not value:
        raise BadRequest("'weights' must be a base64 .npz archive, as GET /models/<name>/weights gives")
    if len(value) > MAX_BASE64_CHARS:
        raise BadRequest(f"'weights' is {len(value):,} characters of base64; an archive of at most "
                         f"{MAX_ARCHIVE_BYTES:,} bytes ({MAX_BASE64_CHARS:,} characters) is accepted")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("'weights' is not valid base64") from None


def decode_probabilities(text: str, images: int) -> np.ndarray:
    """A /parity result's probabilities back to float32 (images, 10)."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(images, 10)
