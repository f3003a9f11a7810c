"""One network, proven: a model's weights transplanted into every implementation, scored on the same images.

``POST /parity {"source": "<model>"}``: the source's serving weights are exported (framework-neutral), every
service loads them into fresh instances of each of its models, and each scores the 10,000 test images.
Each target is compared with the source's own transplant: the largest difference in any probability
(``max_abs_diff``) and how often the two give the same label (``agreement``).
"""

from __future__ import annotations

import numpy as np

from servekit.errors import ApiError
from servekit.parity import decode_probabilities

from .clients import ServiceDirectory, ServiceError, as_api_error

PARITY_TIMEOUT_S = 600.0
TOLERANCE = 1e-5  # the goal: the same network gives the same probabilities in every framework


def run_parity(directory: ServiceDirectory, source: str, limit: int | None = None) -> dict:
    """Transplant ``source``'s weights into every model; per target its difference from the source."""
    owner = directory.owner(source)
    try:
        exported = directory.clients[owner].call("GET", f"/models/{source}/weights", 30).body
    except ServiceError as exc:
        raise as_api_error(exc) from None
    body = {"weights": exported["npz"], **({"limit": limit} if limit else {})}
    answers = directory.fan_out(lambda client: client.call("POST", "/parity", PARITY_TIMEOUT_S, json=body).body,
                                pool="batch")
    scored, labels, errors = {}, None, []
    for service, answer in answers.items():
        if isinstance(answer, Exception):
            errors.append({"service": service, "error": str(answer)})
            continue
        labels = np.asarray(answer["labels"])
        for result in answer["results"]:
            scored[result["model"]] = (result["framework"],
                                       decode_probabilities(result["probabilities"], answer["images"]))
    if source not in scored:
        raise ApiError(f"the source's own service could not score its transplant: {errors}", 502)
    reference = scored[source][1]
    targets = []
    for model, (framework, probabilities) in scored.items():
        targets.append({
            "model": model,
            "framework": framework,
            "max_abs_diff": float(np.abs(probabilities - reference).max()),
            "agreement": float((probabilities.argmax(1) == reference.argmax(1)).mean()),
            "accuracy": float((probabilities.argmax(1) == labels).mean()),
        })
    worst = max((t["max_abs_diff"] for t in targets if t["model"] != source), default=0.0)
    return {"source": source, "source_version": exported.get("version"), "images": int(len(labels)),
            "tolerance": TOLERANCE, "max_abs_diff": worst, "within_tolerance": worst <= TOLERANCE,
            "targets": targets, "errors": errors}
