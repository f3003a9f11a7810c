"""The report's conclusion: sentences written from the snapshot's numbers, never from a fixed text.

Which differences in accuracy are significant and which are not (the verdict's pairs), how much the seeds
move accuracy, which framework trained fastest and which served fastest, and what is missing (a verdict still
being computed, no benchmark yet, a service that did not answer, a failed model).
"""

from __future__ import annotations

from .report_format import mebibytes, number, p_value

MOST_PAIRS_NAMED = 6


def conclusions(snapshot: dict) -> list[str]:
    """The conclusion's paragraphs, in order: what is missing, size, accuracy and verdict, seeds, training speed,
    serving speed, warm-up, memory."""
    rows = snapshot["comparison"]["models"]
    if not rows:
        return ["There is nothing to conclude yet: no service answered with its models, and the gateway has no "
                "stored run."]
    paragraphs = [
        _missing(snapshot, rows),
        _size(rows),
        _accuracy(rows, snapshot["comparison"].get("verdict")),
        _seeds(rows),
        _training(rows),
        _serving(rows),
        _warmup(rows),
        _memory(snapshot["services"]),
    ]
    return [p for p in paragraphs if p]


def _missing(snapshot: dict, rows: list[dict]) -> str:
    """Services that did not answer, models not trained, models that failed in the latest run."""
    sentences = []
    for service in snapshot["services"]:
        if not service["up"]:
            sentences.append(f"The {service['name']} service did not answer, so its models' figures below come from "
                             "the gateway's stored runs where it has them.")
    untrained = [r["model"] for r in rows if r.get("up") and not r.get("ready")]
    if untrained:
        sentences.append(f"Not trained yet: {', '.join(untrained)}.")
    run = snapshot.get("latest_run")
    if run:
        failed = {m: e.get("error") for m, e in run.get("models", {}).items() if e.get("status") == "failed"}
        for model, error in failed.items():
            sentences.append(f"In the latest run ({run['run_id']}), {model} failed: {error or 'no reason given'}.")
        if run["status"] in ("queued", "running"):
            sentences.append(f"Run {run['run_id']} is still {run['status']}: these figures are of the versions "
                             "served before it ends.")
    else:
        sentences.append("No training run is stored at this gateway yet.")
    return " ".join(sentences)


def _size(rows: list[dict]) -> str:
    params = {r["model"]: r.get("params") for r in rows if r.get("params") is not None}
    if not params:
        return ""
    sizes = set(params.values())
    if len(sizes) == 1:
        every = "Both" if len(params) == 2 else f"All {len(params)}" if len(params) > 2 else "The one"
        return f"{every} implementation{'s' if len(params) > 1 else ''} have the same {sizes.pop():,} parameters."
    listed = ", ".join(f"{m} {p:,}" for m, p in params.items())
    return f"The implementations do not all have the same number of parameters: {listed}."


def _accuracy(rows: list[dict], verdict: dict | None) -> str:
    """The accuracies' range, then which pairs differ significantly (and that the others do not)."""
    accuracy = {r["model"]: r["test_accuracy"] for r in rows if r.get("test_accuracy") is not None}
    if not accuracy:
        return "No model has a test accuracy yet."
    best = max(accuracy, key=accuracy.get)
    worst = min(accuracy, key=accuracy.get)
    sentences = [f"Test accuracy goes from {accuracy[worst]:.4f} ({worst}) to {accuracy[best]:.4f} ({best}) over "
                 f"{len(accuracy)} models, a span of {accuracy[best] - accuracy[worst]:.4f}."]
    if verdict is None:
        sentences.append("Fewer than two models could be judged on the test set, so there is no verdict on which "
                         "differences are significant.")
    elif verdict.get("status") == "computing":
        sentences.append("The verdict on which differences are significant is being computed; reload the report "
                         "in a few seconds.")
    else:
        sentences.append(_verdict(verdict, accuracy))
    return " ".join(sentences)


def _verdict(verdict: dict, accuracy: dict[str, float]) -> str:
    """Which pairs differ significantly (named, the clearest first) and which do not (named when few)."""
    pairs = verdict["pairs"]
    alpha = verdict["alpha"]
    judged = f"exact McNemar, Holm over {len(pairs)} pair{'s' if len(pairs) != 1 else ''}"
    significant = sorted((p for p in pairs if p["significant"]), key=lambda p: p["p_adjusted"])
    similar = sorted((p for p in pairs if not p["significant"]), key=lambda p: p["p_adjusted"])
    if not significant:
        text = (f"No pair of models differs significantly at alpha {alpha:g} ({judged}): the differences in "
                "accuracy are within what chance on 10,000 images gives.")
    else:
        named = "; ".join(_difference(pair) for pair in significant[:MOST_PAIRS_NAMED])
        if len(significant) > MOST_PAIRS_NAMED:
            named += f"; and {len(significant) - MOST_PAIRS_NAMED} more (see the pair table)"
        text = (f"{len(significant)} of {len(pairs)} pair{'s' if len(pairs) != 1 else ''} differ"
                f"{'s' if len(significant) == 1 else ''} significantly at alpha {alpha:g} ({judged}): {named}.")
        if not similar:
            text += " Every pair differs significantly."
        elif len(similar) <= MOST_PAIRS_NAMED:
            text += " Not significantly different: " + ", ".join(
                f"{p['a']} and {p['b']} ({_adjusted(p)})" for p in similar) + "."
        else:
            text += f" No other pair differs significantly ({len(similar)} of {len(pairs)} pairs)."
    judged_models = set(verdict.get("agreement") or {})
    left_out = [m for m in accuracy if judged_models and m not in judged_models]
    if left_out:
        text += f" Not judged: {', '.join(left_out)} (no per-image answers from its service)."
    return text


def _difference(pair: dict) -> str:
    """"a is more accurate than b (...)": the better of a significant pair first."""
    better, worse, better_only, worse_only = ((pair["a"], pair["b"], pair["a_only"], pair["b_only"])
                                              if pair["a_only"] >= pair["b_only"] else
                                              (pair["b"], pair["a"], pair["b_only"], pair["a_only"]))
    return (f"{better} is more accurate than {worse} ({better_only:,} images only {better} got right, "
            f"{worse_only:,} the other way; {_adjusted(pair)})")


def _adjusted(pair: dict) -> str:
    text = p_value(pair["p_adjusted"])
    return f"p_adjusted {text}" if text.startswith("<") else f"p_adjusted={text}"


def _seeds(rows: list[dict]) -> str:
    spread = {r["model"]: r["accuracy_sd"] for r in rows
              if len(r.get("seeds") or []) > 1 and r.get("accuracy_sd") is not None}
    if not spread:
        if any(r.get("seeds") for r in rows):
            return ("Each model was trained with one seed, so how far accuracy moves from seed to seed is not "
                    "measured here (a run with several seeds measures it).")
        return ""
    widest = max(spread, key=spread.get)
    accuracies = [r["test_accuracy"] for r in rows if r.get("test_accuracy") is not None]
    span = max(accuracies) - min(accuracies) if accuracies else 0.0
    seeds = max(len(r.get("seeds") or []) for r in rows)
    text = (f"Retraining with another seed moves a model's accuracy by a standard deviation of up to "
            f"{spread[widest]:.4f} ({widest}, over {seeds} seeds); the models' accuracies span {span:.4f}")
    if span < 2 * spread[widest]:
        return text + (", so their ranking may change with the seed: a significant pair says that these trained "
                       "weights differ, not necessarily that the frameworks do.")
    return text + ", more than twice the seeds' spread."


def _training(rows: list[dict]) -> str:
    timed = [(r["model"], r["training"]["epoch_seconds"], r["training"].get("ms_per_step"), r.get("framework"))
             for r in rows if (r.get("training") or {}).get("epoch_seconds")]
    if not timed:
        return "No model has training times yet."
    timed.sort(key=lambda t: t[1])
    model, seconds, step, framework = timed[0]
    named = model if framework == model else f"{model} ({framework or 'framework not reported'})"
    first = f"{named} trained fastest: {seconds:.2f} s per steady epoch"
    first += f", {step:.1f} ms per step, 1.00x" if step is not None else ", 1.00x"
    others = ", ".join(f"{m} {s / seconds:.2f}x ({s:.2f} s)" for m, s, _, _ in timed[1:])
    text = first + (f"; then {others}." if others else ".")
    if any((r.get("training") or {}).get("epochs") == 1 for r in rows if r.get("training")):
        text += (" With a single epoch, the steady figure is that epoch's, tracing and warm-up included; train more "
                 "epochs for a steady one.")
    return text


def _serving(rows: list[dict]) -> str:
    served = [r for r in rows if r.get("serving")]
    if not served:
        return "There is no benchmark yet, so nothing is said here about serving speed (POST /benchmark measures it)."
    served.sort(key=lambda r: -r["serving"]["throughput_rps"])
    fastest, slowest = served[0], served[-1]

    def described(row: dict) -> str:
        s = row["serving"]
        return (f"{s['throughput_rps']:,.0f} req/s, p50 {number(s['latency_ms'].get('p50'), '{:.2f}')} ms, "
                f"p99 {number(s['latency_ms'].get('p99'), '{:.2f}')} ms")

    concurrencies = sorted({r["serving"]["concurrency"] for r in served})
    at = (f"at concurrency {concurrencies[0]}" if len(concurrencies) == 1
          else f"(benchmarked at different concurrencies: {', '.join(str(c) for c in concurrencies)})")
    text = f"{fastest['model']} served fastest {at} ({described(fastest)})"
    if len(served) > 1:
        text += f"; {slowest['model']} slowest ({described(slowest)})"
    text += "."
    calls = {r["model"]: (r["serving"].get("inference_ms") or {}).get("p50") for r in served}
    calls = {m: v for m, v in calls.items() if v is not None}
    if len(calls) > 1:
        text += (f" The model call alone (p50) takes {_from_to(calls, '{:.2f} ms')}; the rest of a request's time is "
                 "HTTP, decoding and batching.")
    failing = [f"{r['model']} {r['serving']['errors']} of {r['serving']['requests']}" for r in served
               if r["serving"].get("errors")]
    if failing:
        text += f" Requests that failed in the benchmark: {', '.join(failing)}."
    missing = [r["model"] for r in rows if not r.get("serving")]
    if missing:
        text += f" Not benchmarked: {', '.join(missing)}."
    return text


def _warmup(rows: list[dict]) -> str:
    warm = {r["model"]: r["warmup_ms"] for r in rows if r.get("warmup_ms") is not None}
    if len(warm) < 2:
        return ""
    return f"Warming up (the first call after loading, which no request pays) took {_from_to(warm, '{:.1f} ms')}."


def _memory(services: list[dict]) -> str:
    resident = {s["name"]: (s["health"].get("memory") or {}).get("rss_bytes") for s in services if s["up"]}
    resident = {name: value for name, value in resident.items() if value is not None}
    if not resident:
        return ""
    if len(resident) == 1:
        name, value = next(iter(resident.items()))
        return f"The {name} service holds {mebibytes(value)} resident while serving."
    return f"Resident memory (RSS) of the serving processes: {_from_to(resident, None)}."


def _from_to(values: dict[str, float], spec: str | None) -> str:
    """"from 1.2 ms (a) to 3.4 ms (b)", or "1.2 ms each" when they are all the same (``spec`` None: MiB)."""
    def shown(value: float) -> str:
        return mebibytes(value) if spec is None else spec.format(value)

    low, high = min(values, key=values.get), max(values, key=values.get)
    if values[low] == values[high]:
        return f"{shown(values[low])} each"
    return f"from {shown(values[low])} ({low}) to {shown(values[high])} ({high})"
