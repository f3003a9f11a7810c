"""The comparison: per model its framework, size, training cost, accuracy and serving speed."""

from __future__ import annotations

import math
import statistics
import time

from .chart import model_colours
from .clients import STATUS_TIMEOUT_S, ServiceDirectory
from .judging import Judge
from .store import Store
from .verdict import mean_sd, wilson_interval

TEST_IMAGES = 10_000


def build_comparison(directory: ServiceDirectory, store: Store, judge: Judge | None = None) -> dict:
    """One row per model from the services' current models, the latest runs, evaluation and benchmark.

    With a ``judge``, also the statistics over the served models' answers on the test set: each row's
    ``ci95`` and the top-level ``verdict`` (pairwise exact McNemar tests, Holm-corrected).
    """
    live = directory.fan_out(
        lambda client: (
            client.call("GET", "/health", STATUS_TIMEOUT_S).body,
            client.call("GET", "/models", STATUS_TIMEOUT_S).body["models"],
        )
    )
    latest_run_entry = _latest_run_entries(store.latest("runs", 100))
    evaluation = _latest_by_model(store.latest("evaluations", 50), "results")
    benchmark = _latest_by_model(store.latest("benchmarks", 50), "results")

    rows = []
    for service, answer in live.items():
        if isinstance(answer, Exception):
            rows.extend(_offline_rows(service, latest_run_entry, benchmark))
            continue
        health, models = answer
        for model in models:
            name = model["name"]
            rows.append({
                "model": name,
                "service": service,
                "up": True,
                "framework": health["framework"],
                "framework_version": health["framework_version"],
                "threads": health.get("threads", {}),
                "params": model["params"],
                "ready": model["ready"],
                "version": model.get("version"),
                "trained_at": model.get("trained_at"),
                "training": training_summary(model.get("history") or [], model.get("config"),
                                             model.get("train_samples"), model.get("train_seconds")),
                "validation_accuracy": _last(model.get("history"), "val_accuracy"),
                "test_accuracy": _evaluated_accuracy(evaluation.get(name), model),
                "warmup_ms": model.get("warmup_ms"),
                "serving": _serving(benchmark.get(name)),
                **seed_spread(latest_run_entry.get(name)),
            })
    colours = model_colours(row["model"] for row in rows)  # the chart's and the page's colour of each model
    for row in rows:
        row["colour"] = colours[row["model"]]
    comparison = {"generated_at": time.time(), "models": rows, "verdict": None}
    if judge is not None:
        comparison["verdict"] = _add_verdict(rows, judge)
    return comparison


def seed_spread(entry: dict | None) -> dict:
    """Mean, sd, min and max over the seeds of the model's latest run: test accuracy and steady s/epoch."""
    results = [r for r in (entry or {}).get("seed_results") or [] if r.get("status") == "succeeded"]
    if not results and entry and entry.get("test_accuracy") is not None:
        results = [{"seed": (entry.get("config") or {}).get("seed"), "test_accuracy": entry["test_accuracy"],
                    "epoch_seconds": entry.get("epoch_seconds")}]
    accuracies = [r["test_accuracy"] for r in results if r.get("test_accuracy") is not None]
    epochs = [r["epoch_seconds"] for r in results if r.get("epoch_seconds") is not None]
    spread = {"seeds": [r.get("seed") for r in results], "accuracy_mean": None, "accuracy_sd": None,
              "accuracy_min": None, "accuracy_max": None, "epoch_seconds_mean": None, "epoch_seconds_sd": None}
    if accuracies:
        mean, sd, low, high = mean_sd(accuracies)
        spread.update(accuracy_mean=round(mean, 6), accuracy_sd=round(sd, 6), accuracy_min=low, accuracy_max=high)
    if epochs:
        mean, sd, _, _ = mean_sd(epochs)
        spread.update(epoch_seconds_mean=round(mean, 3), epoch_seconds_sd=round(sd, 3))
    return spread


def _add_verdict(rows: list[dict], judge: Judge) -> dict | None:
    """Each row's 95% interval and per-class figures; the pairwise verdict (None with fewer than 2 models)."""
    result = judge.verdict(rows)
    per_model = (result or {}).get("models", {})
    for row in rows:
        stats = per_model.get(row["model"])
        if stats:
            row.update(ci95=stats["ci95"], ece=stats["ece"], per_class_accuracy=stats["per_class_accuracy"],
                       confusion=stats["confusion"], test_correct=stats["correct"])
        elif row.get("test_accuracy") is not None:  # not judged (yet): the interval from the accuracy alone
            row["ci95"] = list(wilson_interval(round(row["test_accuracy"] * TEST_IMAGES), TEST_IMAGES))
        else:
            row["ci95"] = None
    if result is None:
        return None
    return {key: value for key, value in result.items() if key != "models"}


def training_summary(history: list[dict], config: dict | None, samples: int | None, total: float | None) -> dict:
    """Total seconds, first and steady-state seconds per epoch, and ms per step."""
    if not history:
        return {"total_seconds": None, "epochs": 0, "first_epoch_seconds": None,
                "epoch_seconds": None, "ms_per_step": None}
    seconds = [epoch["seconds"] for epoch in history]
    steady = statistics.mean(seconds[1:]) if len(seconds) > 1 else seconds[0]
    steps = math.ceil(samples / config["batch_size"]) if samples and config else None
    return {
        "total_seconds": total,
        "epochs": len(history),
        "first_epoch_seconds": seconds[0],
        "epoch_seconds": round(steady, 3),
        "ms_per_step": round(steady / steps * 1000.0, 3) if steps else None,
    }


def _serving(result: dict | None) -> dict | None:
    if not result or "latency_ms" not in result:
        return None
    return {
        "latency_ms": result["latency_ms"],
        "inference_ms": result.get("inference_ms"),
        "throughput_rps": result["throughput_rps"],
        "concurrency": result["concurrency"],
        "errors": result["errors"],
        "requests": result["requests"],
    }


def _evaluated_accuracy(evaluated: dict | None, model: dict) -> float | None:
    """The latest full evaluation when it is of the model now served, else the accuracy measured after training."""
    if evaluated and evaluated.get("samples") == 10_000 and (evaluated.get("trained_at") == model.get("trained_at")):
        return evaluated["accuracy"]
    return model.get("test_accuracy")


def _last(history: list[dict] | None, key: str):
    return history[-1][key] if history else None


def _latest_run_entries(runs: list[dict]) -> dict[str, dict]:
    """Each model's entry in the newest run where it trained successfully."""
    found: dict[str, dict] = {}
    for run in runs:  # newest first
        for name, entry in run.get("models", {}).items():
            if entry.get("status") == "succeeded":
                found.setdefault(name, {**entry, "config": run.get("config", {})})
    return found


def _latest_by_model(records: list[dict], key: str) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for record in records:  # newest first
        for result in record.get(key, []):
            if "model" in result and "error" not in result:
                found.setdefault(result["model"], result)
    return found


def _offline_rows(service: str, runs: dict[str, dict], benchmark: dict[str, dict]) -> list[dict]:
    """What the store still knows about a service that is down."""
    rows = []
    for name, entry in runs.items():
        if entry.get("service") != service:
            continue
        history = entry.get("history") or []
        rows.append({
            "model": name, "service": service, "up": False, "framework": None, "framework_version": None,
            "threads": {}, "params": None, "ready": False, "version": entry.get("version"), "trained_at": None,
            "training": training_summary(history, None, None, entry.get("train_seconds")),
            "validation_accuracy": _last(history, "val_accuracy"),
            "test_accuracy": entry.get("test_accuracy"), "warmup_ms": None, "serving": _serving(benchmark.get(name)),
        })
    return rows
