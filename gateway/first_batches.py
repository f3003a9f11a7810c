"""The first training batch of every model's own pipeline, asked of the services once per (model, seed, same_start).

A service takes 0.9-1.7 s to build a pipeline's first batch, on the cores its predictions need: answers are
kept (a few dozen, least recently used dropped first), identical requests at the same time share one
computation, and at most ``COMPUTING_REQUESTS`` requests ask the services at once (429 beyond).
"""

from __future__ import annotations

from servekit.limits import Slots

from .clients import ServiceClient, ServiceDirectory, ServiceError
from .shared import SharedResults

KEPT_BATCHES = 48  # (model, seed, same_start) answers of ~10 KB each
COMPUTING_REQUESTS = 2  # requests asking the services at once: each keeps every service busy for a second or two
RETRY_AFTER_S = 2
FIRST_BATCH_TIMEOUT_S = 300.0


class FirstBatches:
    """Each model's first batch for a seed, kept once asked; the services asked by few requests at a time."""

    def __init__(self, directory: ServiceDirectory):
        self.directory = directory
        self.kept = SharedResults(KEPT_BATCHES)
        self.asking = SharedResults(0)  # requests asking the services now: identical ones share the asking
        self.slots = Slots(COMPUTING_REQUESTS, "first-batch computations are", retry_after_s=RETRY_AFTER_S)

    def answer(self, seed: int, same_start: bool) -> list[dict]:
        """Every model's first batch (or an error entry): from what is kept, else asked of its service.

        ApiError 429 (with Retry-After) when this request would ask the services while ``COMPUTING_REQUESTS``
        others already do; identical requests at the same time share one asking (and its 429).
        """
        plan = self.directory.resolve(None)
        if self.kept.holds([(model, seed, same_start) for models in plan.values() for model in models]):
            return self._collect(plan, seed, same_start)
        request = (seed, same_start, tuple((service, tuple(models)) for service, models in plan.items()))
        return self.asking.get(request, lambda: self._ask(plan, seed, same_start), keep=lambda _: False)

    def _ask(self, plan: dict[str, list[str]], seed: int, same_start: bool) -> list[dict]:
        with self.slots.take():
            return self._collect(plan, seed, same_start)

    def _collect(self, plan: dict[str, list[str]], seed: int, same_start: bool) -> list[dict]:
        answers = self.directory.fan_out(
            lambda client: [self._batch(client, model, seed, same_start) for model in plan[client.name]],
            list(plan), pool="batch")
        batches = []
        for service, answer in answers.items():
            if isinstance(answer, Exception):
                batches.extend({"model": m, "service": service, "error": str(answer)} for m in plan[service])
            else:
                batches.extend(answer)
        return batches

    def _batch(self, client: ServiceClient, model: str, seed: int, same_start: bool) -> dict:
        """One model's entry; an error entry (not kept) when its service did not answer."""
        def ask() -> dict:
            path = f"/data/first-batch?seed={seed}&same_start={str(same_start).lower()}&model={model}"
            batch = client.call("GET", path, FIRST_BATCH_TIMEOUT_S).body
            png = batch.pop("png")
            return {**batch, "service": client.name, "image": png_data_url(png)}

        try:
            return self.kept.get((model, seed, same_start), ask)
        except ServiceError as exc:
            return {"model": model, "service": client.name, "error": str(exc)}


def png_data_url(png_base64: str) -> str:
    """Base64 PNG text as a URL the page can show directly."""
    return f"data:image/png;base64,{png_base64}"
