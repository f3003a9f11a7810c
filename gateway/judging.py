"""The verdict over the models being served: their answers on the 10,000 test images, compared pair by pair.

Collecting the answers takes each service seconds per model (24.7 s for eight models after a run), so it is
never done in a request: a verdict is computed in the background, once per set of served (model, version)
pairs, as soon as that set is known (a run's end, a promotion through the gateway, the gateway's start, or a
/compare that sees a set it has no verdict for). Until it is there, ``verdict`` answers ``{"status":
"computing"}`` at once. Each service is asked once per model version for its per-image answers (``POST
/evaluate`` with ``per_image``), kept until the model's version changes. The statistics themselves are in
``verdict.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from servekit.errors import ApiError

from .clients import ServiceDirectory, ServiceError
from .verdict import disagreements, verdict

log = logging.getLogger(__name__)

EVALUATE_TIMEOUT_S = 300.0
RETRY_S = 15.0  # an incomplete verdict (a service did not answer, a roll-out under way) is computed again after this
KEPT_VERDICTS = 8  # served sets whose verdicts are kept (a roll-out may alternate between two)
COMPUTING = {"status": "computing"}

Served = tuple[tuple[str, int], ...]  # the served (model, version) pairs, sorted: what a verdict is of


@dataclass
class Judgement:
    """The verdict of one served set (None when fewer than two models answered), the answers it is made of, and
    whether every served model answered (else it is computed again after RETRY_S)."""

    verdict: dict | None
    answers: dict[str, dict]
    complete: bool
    at: float


def served_versions(rows: Iterable[dict]) -> tuple[Served, dict[str, str]]:
    """The ready models' (model, version) pairs, sorted, and each one's service in the rows' order."""
    ready = [r for r in rows if r.get("ready") and r.get("version") is not None]
    return tuple(sorted((r["model"], r["version"]) for r in ready)), {r["model"]: r["service"] for r in ready}


class Judge:
    """Per-image test-set answers of the served versions, and what they say about the models' differences.

    One daemon thread computes verdicts one after another (it never keeps the process alive at exit); a served
    set is computed at most once at a time, whoever asks for it.
    """

    def __init__(self, directory: ServiceDirectory, served_rows: Callable[[], list[dict]]):
        self.directory = directory
        self.served_rows = served_rows  # the /compare rows of now: what watch() judges
        self._answers: dict[str, dict] = {}  # model -> {"version", "labels", "predicted", "confidence"}
        self._judged: OrderedDict[Served, Judgement] = OrderedDict()
        self._queue: deque[tuple[Served | None, dict[str, str]]] = deque()
        self._queued: set[Served | None] = set()  # waiting or being computed; None: "look the served set up"
        self._changed = threading.Condition()
        self._worker: threading.Thread | None = None

    def watch(self) -> None:
        """Judge the versions served now, in the background (a run has ended, a version was promoted, the gateway
        has started): the next /compare then finds the verdict ready."""
        with self._changed:
            self._enqueue(None, {})

    def verdict(self, rows: list[dict]) -> dict | None:
        """At once: the statistics over the rows' ready models, ``{"status": "computing"}`` while they are being
        computed in the background (started here when nobody has yet), None with fewer than two."""
        served, services = served_versions(rows)
        if len(served) < 2:
            return None
        judged = self._judgement(served, services)
        return dict(COMPUTING) if judged is None else judged.verdict

    def disagreements(self, rows: list[dict], limit: int) -> tuple[list[dict], list[str]] | None:
        """Test images on which the ready models disagree (most split first), and the models compared; None while
        their answers are being computed."""
        served, services = served_versions(rows)
        if len(served) < 2:
            return [], sorted(services)
        judged = self._judgement(served, services)
        if judged is None:
            return None
        found = judged.answers
        if len(found) < 2:
            return [], list(found)
        return disagreements(_labels(found), _models(found), limit=limit), list(found)

    def _judgement(self, served: Served, services: dict[str, str]) -> Judgement | None:
        """The kept judgement of ``served`` (None: not yet); queues its computation when it has none, or an
        incomplete one older than RETRY_S."""
        with self._changed:
            judged = self._judged.get(served)
            if judged is not None:
                self._judged.move_to_end(served)
            if self._needs_judging(served):
                self._enqueue(served, services)
            return judged

    def _needs_judging(self, served: Served) -> bool:
        judged = self._judged.get(served)
        return judged is None or (not judged.complete and time.monotonic() - judged.at > RETRY_S)

    def _enqueue(self, served: Served | None, services: dict[str, str]) -> None:
        """Queue a computation unless it is queued or running already (call with ``_changed`` held)."""
        if served in self._queued:
            return
        self._queued.add(served)
        self._queue.append((served, services))
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="judge", daemon=True)
            self._worker.start()
        self._changed.notify()

    def _work(self) -> None:
        while True:
            with self._changed:
                while not self._queue:
                    self._changed.wait()
                served, services = self._queue.popleft()
            try:
                if served is None:
                    self._judge_served_now()
                else:
                    self._judge(served, services)
            except Exception:  # the next request queues it again; the thread goes on
                log.exception("judging %s failed", served)
            finally:
                with self._changed:
                    self._queued.discard(served)

    def _judge_served_now(self) -> None:
        served, services = served_versions(self.served_rows())
        with self._changed:
            if len(served) < 2 or served in self._queued or not self._needs_judging(served):
                return
            self._queued.add(served)
        try:
            self._judge(served, services)
        finally:
            with self._changed:
                self._queued.discard(served)

    def _judge(self, served: Served, services: dict[str, str]) -> None:
        """Fetch the answers not had yet, compute the statistics, keep the judgement."""
        started = time.monotonic()
        wanted = dict(served)
        with self._changed:
            missing = [m for m in services if self._answers.get(m, {}).get("version") != wanted[m]]
        by_service: dict[str, list[str]] = {}
        for model in missing:
            by_service.setdefault(services[model], []).append(model)
        if by_service:
            try:
                fetched = self.directory.fan_out(lambda client: self._fetch(client, by_service[client.name]),
                                                 list(by_service), pool="batch")
            except ApiError as exc:  # the batch pool is full: tried again after RETRY_S
                log.warning("per-image answers: %s", exc)
                fetched = {}
            for service, result in fetched.items():
                if isinstance(result, Exception):
                    log.warning("per-image answers of %s: %s", service, result)
                    continue
                with self._changed:
                    self._answers.update(result)
        with self._changed:
            found = {m: self._answers[m] for m in services if self._answers.get(m, {}).get("version") == wanted[m]}
        result = {"status": "ready", **verdict(_labels(found), _models(found))} if len(found) >= 2 else None
        judged = Judgement(result, found, complete=len(found) == len(wanted), at=time.monotonic())
        with self._changed:
            self._judged[served] = judged
            self._judged.move_to_end(served)
            while len(self._judged) > KEPT_VERDICTS:
                self._judged.popitem(last=False)
        log.info("verdict over %d of %d served models in %.1f s (%d asked for their answers)",
                 len(found), len(wanted), time.monotonic() - started, len(missing))

    def _fetch(self, client, models: list[str]) -> dict[str, dict]:
        answers = {}
        for model in models:
            try:
                body = client.call("POST", "/evaluate", EVALUATE_TIMEOUT_S,
                                   json={"model": model, "per_image": True}).body
            except ServiceError as exc:
                log.warning("per-image answers of %s: %s", model, exc)
                continue
            result = body["results"][0]
            answers[model] = {
                "version": result["model_version"],
                "labels": np.asarray(result["labels"], np.int64),
                "predicted": np.asarray(result["predicted"], np.int64),
                "confidence": np.asarray(result["confidence"], np.float64),
            }
        return answers


def _labels(found: dict[str, dict]) -> np.ndarray:
    return next(iter(found.values()))["labels"]


def _models(found: dict[str, dict]) -> dict[str, dict]:
    return {m: {"predicted": a["predicted"], "confidence": a["confidence"]} for m, a in found.items()}
