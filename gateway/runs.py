"""Training runs: every (or the chosen) model trained through its service, with progress and history.

Models train one at a time by default, so that no model's timing includes
another's load on the cores; ``parallel`` overlaps the services (a service
still trains its own models in turn). Every change is written to the store, so
that a run's history survives a gateway restart.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import uuid

from servekit.errors import ApiError, Conflict, NotFound

from .clients import ServiceDirectory, ServiceError
from .pools import DaemonExecutor
from .store import Store

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5
SAVE_INTERVAL_S = 2.0
BUSY_RETRY_S = 600.0  # how long to wait for a service that is busy with a job started elsewhere
JOB_FIELDS = ("epoch", "epochs", "step", "steps_per_epoch", "loss", "accuracy", "history")
SEED_RESULT_FIELDS = ("status", "test_accuracy", "epoch_seconds", "train_seconds", "version", "error")
ACTIVE_MODEL_STATES = ("queued", "waiting", "running")
STOP_CALL_TIMEOUT_S = 1.0  # per trainer, when the gateway stops: it must be gone within a few seconds


class RunManager:
    """Starts runs in the background, one at a time, and answers for their progress."""

    def __init__(self, directory: ServiceDirectory, store: Store, job_deadline_s: float = 6 * 3600.0,
                 on_run_finished=None):
        self.directory, self.store, self.job_deadline_s = directory, store, job_deadline_s
        self.on_run_finished = on_run_finished  # called with the run once it has ended (no longer active)
        self._lock = threading.Lock()
        self._active: dict | None = None
        self._last_saved = 0.0
        self._stopped = False  # set by stop(): the run's last state is written, nothing after it
        self._save_lock = threading.Lock()
        for run in store.latest("runs", limit=1000):
            if run["status"] in ("queued", "running"):
                run.update(status="failed", error="the gateway restarted during this run")
                store.put("runs", run["run_id"], run)

    def start(self, models: list[str] | None, config: dict, parallel: bool) -> dict:
        """Plan and start a run; Conflict (409) while another run is active."""
        plan = self.directory.resolve(models)
        with self._lock:
            if self._active is not None:
                raise Conflict(f"run {self._active['run_id']} is still {self._active['status']}; wait for it")
            run = {
                "run_id": uuid.uuid4().hex[:12],
                "status": "queued",
                "parallel": parallel,
                "config": config,
                "created_at": time.time(),
                "finished_at": None,
                "progress": 0.0,
                "error": None,
                "models": {
                    model: {"model": model, "service": service, "status": "queued", "epoch": 0, "step": 0}
                    for service, names in plan.items()
                    for model in names
                },
            }
            self.store.put("runs", run["run_id"], run, run["created_at"])  # a store error leaves no run active
            self._active = run
            snapshot = copy.deepcopy(run)
        threading.Thread(target=self._execute, args=(run, plan), name=f"run-{run['run_id']}", daemon=True).start()
        return snapshot

    def cancel(self, run_id: str) -> dict:
        """Stop a run: the model training now is cancelled on its trainer, the queued ones never start."""
        with self._lock:
            if self._active is None or self._active["run_id"] != run_id:
                known = self.store.get("runs", run_id)
                if known is None:
                    raise NotFound(f"no run {run_id!r}; GET /runs lists them")
                raise Conflict(f"run {run_id} has already {known['status']}")
            self._active["cancel_requested"] = True
            snapshot = copy.deepcopy(self._active)
        self._cancel_running_jobs(snapshot)
        return snapshot  # a model about to start sees cancel_requested and does not

    def stop(self, reason: str, timeout_s: float = STOP_CALL_TIMEOUT_S) -> dict | None:
        """The gateway is stopping: cancel the active run's training job on its trainer (one short call, so
        that no version is written after the run ended) and record the run as cancelled, with ``reason``.
        The run's thread is a daemon and dies with the process; nothing is saved after this."""
        with self._lock:
            run = self._active
            if run is None:
                return None
            run["cancel_requested"] = True
            snapshot = copy.deepcopy(run)
        self._cancel_running_jobs(snapshot, timeout_s)  # a trainer stopping too: its job dies with it
        with self._save_lock:
            self._stopped = True
            with self._lock:
                for entry in run["models"].values():
                    if entry.get("status") in ACTIVE_MODEL_STATES:
                        entry.update(status="cancelled", error=reason)
                run.update(status="cancelled", error=reason, finished_at=time.time())
                snapshot = copy.deepcopy(run)
            self.store.put("runs", snapshot["run_id"], snapshot)
        log.info("run %s cancelled: %s", snapshot["run_id"], reason)
        return snapshot

    def get(self, run_id: str) -> dict:
        """A run's status (live while it runs); NotFound when unknown."""
        with self._lock:
            if self._active is not None and self._active["run_id"] == run_id:
                return copy.deepcopy(self._active)
        run = self.store.get("runs", run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r}; GET /runs lists them")
        return run

    def history(self, limit: int = 50) -> list[dict]:
        """Past and current runs, newest first."""
        with self._lock:
            active = copy.deepcopy(self._active) if self._active else None
        runs = self.store.latest("runs", limit)
        return [active if active and r["run_id"] == active["run_id"] else r for r in runs]

    def _execute(self, run: dict, plan: dict[str, list[str]]) -> None:
        self._update(run, status="running")
        try:
            if run["parallel"]:
                with DaemonExecutor(max_workers=len(plan)) as pool:
                    list(pool.map(lambda item: self._train_service(run, *item), plan.items()))
            else:
                for service, models in plan.items():
                    self._train_service(run, service, models)
            failed = [m for m, entry in run["models"].items() if entry["status"] != "succeeded"]
            status = "cancelled" if run.get("cancel_requested") else "failed" if failed else "succeeded"
            self._update(run, status=status, error=f"failed: {', '.join(failed)}" if failed else None)
        except Exception as exc:  # the run records why it stopped; the gateway keeps serving
            log.exception("run %s failed", run["run_id"])
            self._update(run, status="failed", error=str(exc))
        finally:
            try:
                self._update(run, finished_at=time.time(), force_save=True)
            except Exception:  # the store failed: the run's last state is lost, but the gateway takes new runs
                log.exception("could not save the end of run %s", run["run_id"])
            finally:
                with self._lock:
                    self._active = None
                if self.on_run_finished is not None:
                    self.on_run_finished(copy.deepcopy(run))

    def _train_service(self, run: dict, service: str, models: list[str]) -> None:
        for model in models:
            if run.get("cancel_requested"):
                self._update_model(run, model, status="cancelled", error="the run was cancelled")
                continue
            try:
                self._train_model(run, service, model)
            except (ServiceError, ApiError) as exc:
                self._update_model(run, model, status="failed", error=str(exc))

    def _train_model(self, run: dict, service: str, model: str) -> None:
        """Train the model once per seed of the run (once with the run's settings when it names no seeds)."""
        seeds = run["config"].get("seeds") or [None]
        for position, seed in enumerate(seeds):
            if seed is not None:
                self._update_model(run, model, seed=seed, seeds_done=position)
            finished = self._train_job(run, service, model, seed)
            if len(seeds) > 1 or seed is not None:
                with self._lock:
                    entry = run["models"][model]
                    entry.setdefault("seed_results", []).append(
                        {"seed": seed, **{k: entry.get(k) for k in SEED_RESULT_FIELDS}})
                    entry["seeds_done"] = position + 1
            if finished != "succeeded":
                return
            if position < len(seeds) - 1:
                self._update_model(run, model, status="running")

    def _train_job(self, run: dict, service: str, model: str, seed: int | None) -> str:
        """One training job on the model's trainer, followed to its end; returns how it ended."""
        client = self.directory.trainer(service)
        config = {k: v for k, v in run["config"].items() if k != "seeds"}
        body = {"model": model, **config, "run_id": run["run_id"], **({"seed": seed} if seed is not None else {})}
        deadline = time.monotonic() + BUSY_RETRY_S
        while True:
            if run.get("cancel_requested"):
                self._update_model(run, model, status="cancelled", error="the run was cancelled")
                return "cancelled"
            try:
                accepted = client.call("POST", "/train", 30, json=body).body
                break
            except ServiceError as exc:
                if exc.status != 409 or time.monotonic() > deadline:
                    raise
                self._update_model(run, model, status="waiting", error=str(exc))
                time.sleep(2.0)
        self._update_model(run, model, status="running", job_id=accepted["job_id"], error=None,
                           started_at=time.time())
        cancel_sent = False
        deadline = time.monotonic() + self.job_deadline_s
        while True:
            if run.get("cancel_requested") and not cancel_sent:  # also when the cancel came during the POST
                cancel_sent = self._cancel_job(client, accepted["job_id"])
            if time.monotonic() > deadline:  # a hung job must not keep its run (and the runner) forever
                self._cancel_job(client, accepted["job_id"])
                self._update_model(run, model, status="failed", finished_at=time.time(),
                                   error=f"no result within {self.job_deadline_s:.0f} s (JOB_DEADLINE_S)")
                return "failed"
            try:
                job = client.call("GET", accepted["status_url"], 30).body
            except ServiceError as exc:
                if exc.status == 404:  # the trainer restarted and forgot the job
                    raise
                log.warning("polling %s of run %s: %s; trying again", model, run["run_id"], exc)
                time.sleep(2.0)
                continue
            fields = {key: job.get(key) for key in JOB_FIELDS}
            if job["status"] in ("succeeded", "failed", "cancelled"):
                result = job["results"].get(model, {})
                fields["history"] = result.get("history", fields["history"])
                self._update_model(
                    run, model, **fields, status=job["status"], error=job.get("error"),
                    test_accuracy=result.get("test_accuracy"), train_seconds=result.get("train_seconds"),
                    version=result.get("version"), promoted=result.get("promoted"),
                    promotion=result.get("promotion"), finished_at=time.time(),
                    epoch_seconds=steady_epoch_seconds(fields["history"]),
                )
                return job["status"]
            self._update_model(run, model, **fields)
            time.sleep(POLL_INTERVAL_S)

    def _cancel_running_jobs(self, run: dict, timeout_s: float = 30) -> None:
        """Ask the trainer of every model training now to stop its job."""
        for entry in run["models"].values():
            if entry.get("status") == "running" and entry.get("job_id"):
                self._cancel_job(self.directory.trainer(entry["service"]), entry["job_id"], timeout_s)

    def _cancel_job(self, client, job_id: str, timeout_s: float = 30) -> bool:
        """Ask the trainer to stop a job; False when it could not be asked (it is asked again later)."""
        try:
            client.call("POST", f"/train/{job_id}/cancel", timeout_s, json={})
        except ServiceError as exc:
            if exc.status != 409:  # 409: it has just finished anyway
                log.warning("cancelling job %s: %s", job_id, exc)
                return False
        return True

    def _update_model(self, run: dict, model: str, **fields) -> None:
        with self._lock:
            entry = run["models"][model]
            new_epoch = fields.get("epoch") != entry.get("epoch") or fields.get("status") != entry.get("status")
            entry.update(fields)
            seeds = len(run["config"].get("seeds") or [None])
            run["progress"] = round(sum(_fraction_done(e, seeds) for e in run["models"].values()) / len(run["models"]),
                                    4)
        self._save(run, force=new_epoch)

    def _update(self, run: dict, force_save: bool = True, **fields) -> None:
        with self._lock:
            run.update(fields)
        self._save(run, force=force_save)

    def _save(self, run: dict, force: bool) -> None:
        now = time.monotonic()
        if force or now - self._last_saved > SAVE_INTERVAL_S:
            with self._save_lock:  # one write at a time: none can land after stop()'s
                if self._stopped:
                    return
                with self._lock:
                    snapshot = copy.deepcopy(run)
                self.store.put("runs", snapshot["run_id"], snapshot)
            self._last_saved = now


def steady_epoch_seconds(history: list[dict] | None) -> float | None:
    """Mean seconds of the epochs after the first (which pays for tracing and warm-up); the first if alone."""
    seconds = [epoch["seconds"] for epoch in history or []]
    if not seconds:
        return None
    steady = seconds[1:] or seconds
    return round(sum(steady) / len(steady), 3)


def _fraction_done(entry: dict, seeds: int = 1) -> float:
    """How much of a model's work in its run is done: whole seeds, and the epochs and steps of the current one."""
    done = entry.get("seeds_done") or 0
    if entry["status"] in ("succeeded", "failed", "cancelled") and (done >= seeds or entry["status"] != "succeeded"):
        return 1.0
    epochs, steps = entry.get("epochs") or 0, entry.get("steps_per_epoch") or 0
    current = 0.0
    if epochs and steps:
        steps_done = (max(entry.get("epoch") or 1, 1) - 1) * steps + (entry.get("step") or 0)
        current = min(1.0, steps_done / (epochs * steps))
    return min(1.0, (done + current) / seeds)
