"""Everything the report shows, gathered at one moment into one plain dict (a snapshot).

The quick parts are asked at once: ``/compare`` (rows and verdict, the very figures ``GET /compare`` answers),
the runs, the latest benchmark, and each service's ``/health``, ``/models`` and ``/source`` through the
gateway's clients and interactive pool. The slow parts (the pipelines' first batches, a grid of training
digits, the disagreements and their images: seconds of the services' time) run side by side on a small
pool of daemon threads and are waited for at most ``SLOW_PARTS_WAIT_S``; what has not arrived by then is
named in the snapshot (``missing``) and the report says so, while the work goes on and fills the caches the
next report reads from.

A missing answer never fails the snapshot: a service that is down, an older service without ``/source``,
no run yet, a verdict being computed all become words in the report.
"""

from __future__ import annotations

import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from servekit.backend import TrainConfig
from servekit.errors import ApiError
from servekit.machine import machine_facts

from .clients import STATUS_TIMEOUT_S, ServiceClient, ServiceDirectory, ServiceError
from .compare import build_comparison
from .first_batches import FIRST_BATCH_TIMEOUT_S, FirstBatches, png_data_url
from .judging import Judge
from .pools import DaemonExecutor
from .runs import RunManager
from .shared import SharedResults
from .store import Store

SLOW_PARTS_WAIT_S = 45.0  # first batches, training digits, disagreements: longer, and the report goes out without
SOURCE_TIMEOUT_S = 5.0
DISAGREEMENTS_SHOWN = 24
NOT_REPORTED = "not reported by this service"
RUNS_LOOKED_AT = 50


class ReportData:
    """Collects report snapshots from the gateway's parts; concurrent requests share one collection."""

    def __init__(self, directory: ServiceDirectory, store: Store, judge: Judge, runs: RunManager,
                 first_batches: FirstBatches, slow_parts_wait_s: float = SLOW_PARTS_WAIT_S):
        self.directory, self.store, self.judge, self.runs = directory, store, judge, runs
        self.first_batches = first_batches
        self.slow_parts_wait_s = slow_parts_wait_s
        self._collecting = SharedResults(0)  # requests at the same time share one collection, none is kept
        self._training_digits = SharedResults(8)  # (model, seed) -> grid, as first_batches keeps its own
        self._executor = DaemonExecutor(4, thread_name_prefix="report")

    def snapshot(self) -> dict:
        """The report's facts now (see the module docstring); shared with requests collecting at the same time."""
        return self._collecting.get("now", self._collect, keep=lambda _: False)

    def _collect(self) -> dict:
        comparison = build_comparison(self.directory, self.store, self.judge)
        runs = self.runs.history(RUNS_LOOKED_AT)
        latest_run = runs[0] if runs else None
        results_run = next((run for run in runs if any(entry.get("status") == "succeeded"
                                                       for entry in run.get("models", {}).values())), None)
        config = (results_run or {}).get("config") or {}
        seed = config.get("seed", TrainConfig.seed)
        same_start = bool(config.get("same_start", False))
        slow = {
            "first_batches": self._executor.submit(self._first_batches, seed, same_start),
            "training_digits": self._executor.submit(self._training_digits_grid, seed),
            "disagreements": self._executor.submit(self._disagreements, comparison["models"]),
        }
        services = self._services()
        benchmarks = self.store.latest("benchmarks", 1)
        snapshot = {
            "generated_at": comparison["generated_at"],
            "comparison": comparison,
            "services": services,
            "gateway_machine": machine_facts(),
            "latest_run": latest_run,
            "results_run": results_run,
            "benchmark": _benchmark_summary(benchmarks[0]) if benchmarks else None,
            "missing": [],
        }
        if (comparison.get("verdict") or {}).get("status") == "computing":
            snapshot["missing"].append("verdict")  # computed in the background: the next report has it
        deadline = time.monotonic() + self.slow_parts_wait_s
        for name, future in slow.items():
            snapshot[name] = _wait(future, deadline, name, snapshot["missing"])
        return snapshot

    def _services(self) -> list[dict]:
        """Each service's /health, /models and /source, or why not."""
        try:
            answers = self.directory.fan_out(_service_facts)
        except ApiError as exc:  # the interactive pool is full
            return [{"name": name, "url": client.url, "up": False, "error": str(exc)}
                    for name, client in self.directory.clients.items()]
        return [answer if not isinstance(answer, Exception) else
                {"name": name, "url": self.directory.clients[name].url, "up": False,
                 "error": f"{type(answer).__name__}: {answer}"}
                for name, answer in answers.items()]

    def _first_batches(self, seed: int, same_start: bool) -> dict:
        """Every model's first batch for the run's seed (as GET /data/first-batch answers), or why not."""
        try:
            batches = self.first_batches.answer(seed, same_start)
        except ApiError as exc:
            if exc.status == 429:  # other requests are asking the services now: missing from this report only
                raise
            return {"seed": seed, "same_start": same_start, "batches": [], "error": exc.message}  # a service unseen
        return {"seed": seed, "same_start": same_start, "batches": batches, "error": None}

    def _training_digits_grid(self, seed: int) -> dict:
        """128 training digits in the order every framework shares (same_start), from the first service up."""
        errors = []
        for service, client in self.directory.clients.items():
            models = self.directory.models_of(service)
            if not models:
                errors.append(f"{service}: its models are not known")
                continue
            model = models[0]

            def ask(client=client, model=model) -> dict:
                path = f"/data/first-batch?seed={seed}&same_start=true&model={model}"
                batch = client.call("GET", path, FIRST_BATCH_TIMEOUT_S).body
                return {"model": model, "service": client.name, "seed": seed, "labels": batch["labels"],
                        "sha256": batch["sha256"], "image": png_data_url(batch["png"]), "error": None}

            try:
                return self._training_digits.get((model, seed), ask)
            except ServiceError as exc:
                errors.append(f"{service}: {exc}")
        return {"seed": seed, "image": None, "error": "; ".join(errors) or "no service is configured"}

    def _disagreements(self, rows: list[dict]) -> dict:
        """The test digits the served models disagree on, with their images; or why there are none (yet)."""
        judged = self.judge.disagreements(rows, DISAGREEMENTS_SHOWN)
        if judged is None:
            return {"status": "computing", "models": [], "items": []}
        items, models = judged
        images = self._test_images([item["index"] for item in items])
        return {"status": "ready", "models": models,
                "items": [{**item, "image": images.get(item["index"])} for item in items]}

    def _test_images(self, indices: list[int]) -> dict[int, str]:
        """Test images by index as PNG data: URLs, from the first service that has the data."""
        if not indices:
            return {}
        query = ",".join(str(i) for i in indices)
        for client in self.directory.clients.values():
            try:
                found = client.call("GET", f"/data/test?indices={query}", STATUS_TIMEOUT_S).body["images"]
            except ServiceError:
                continue
            return {image["index"]: png_data_url(image["png"]) for image in found}
        return {}


def _service_facts(client: ServiceClient) -> dict:
    """One service's /health and /models (ServiceError when it does not answer), and its /source or why not."""
    health = client.call("GET", "/health", STATUS_TIMEOUT_S).body
    models = client.call("GET", "/models", STATUS_TIMEOUT_S).body["models"]
    try:
        source, source_error = client.call("GET", "/source", SOURCE_TIMEOUT_S).body, None
    except ServiceError as exc:
        source, source_error = None, NOT_REPORTED if exc.status == 404 else str(exc)
    return {"name": client.name, "url": client.url, "up": True, "error": None, "health": health, "models": models,
            "source": source, "source_error": source_error}


def _wait(future: Future, deadline: float, name: str, missing: list[str]) -> Any:
    """The part's result, or an error entry (and its name in ``missing``) when it failed or is not there in time."""
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        missing.append(name)
        return {"error": "still being computed when the report was made; reload it shortly", "pending": True}
    except Exception as exc:  # a part that failed is a sentence in the report, never a failed report
        missing.append(name)
        return {"error": f"{type(exc).__name__}: {exc}"}


def _benchmark_summary(record: dict) -> dict:
    """The latest benchmark's when and how (its per-model figures are in /compare's rows)."""
    return {key: record.get(key) for key in ("benchmark_id", "created_at", "requests", "concurrency")}
