"""The whole comparison from a terminal, through the gateway's HTTP API.

Trains every model (a progress bar per model), evaluates, benchmarks, prints a
table and writes comparison.json, chart.png and chart.svg to a folder; with
--report DIR, also the gateway's report (report.html, report.md and its images/).

    scripts/compare --gateway http://127.0.0.1:8000 --out results/ [--epochs 5] [--skip-train] [--report DIR]
    scripts/compare --report-only --report DIR    # the report of the gateway's current state alone
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
import zipfile
from pathlib import Path, PurePosixPath

import requests
from tqdm import tqdm

from .benchmark import benchmark_pixels

POLL_S = 1.0


def follow_run(gateway: str, run_id: str) -> dict:
    """Poll a run, drawing one progress bar per model, until it ends."""
    bars: dict[str, tqdm] = {}
    while True:
        run = requests.get(f"{gateway}/runs/{run_id}", timeout=30).json()
        for model, entry in run["models"].items():
            total = (entry.get("epochs") or 0) * (entry.get("steps_per_epoch") or 0)
            if not total:
                continue
            bar = bars.get(model)
            if bar is None:
                bar = bars[model] = tqdm(total=total, desc=f"{model:17}", unit="step", file=sys.stderr)
            done = total if entry["status"] == "succeeded" else (
                (max(entry.get("epoch") or 1, 1) - 1) * entry["steps_per_epoch"] + (entry.get("step") or 0))
            bar.n = min(done, total)
            bar.set_postfix(epoch=entry.get("epoch"), loss=f"{entry.get('loss') or 0:.4f}", status=entry["status"])
            bar.refresh()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            for bar in bars.values():
                bar.close()
            return run
        time.sleep(POLL_S)


def comparison_with_verdict(gateway: str, timeout_s: float = 600.0) -> dict:
    """/compare once its verdict is no longer being computed in the background (or after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        comparison = requests.get(f"{gateway}/compare", timeout=60).json()
        if (comparison.get("verdict") or {}).get("status") != "computing" or time.monotonic() > deadline:
            return comparison
        time.sleep(2.0)


def write_report(gateway: str, folder: Path, timeout_s: float = 600.0) -> list[Path]:
    """Write the gateway's report into ``folder``: report.html, report.md and the images/ it shows. Waits (up to
    ``timeout_s``) until every part of the report is in (``X-Report-Complete``: the verdict, the first batches).
    Returns the files written."""
    deadline = time.monotonic() + timeout_s
    while True:
        page = requests.get(f"{gateway}/report", timeout=300)
        page.raise_for_status()
        if page.headers.get("X-Report-Complete") != "false" or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    archive = requests.get(f"{gateway}/report.md", timeout=300)
    archive.raise_for_status()
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "report.html"]
    written[0].write_bytes(page.content)
    with zipfile.ZipFile(io.BytesIO(archive.content)) as files:
        for name in files.namelist():
            path = PurePosixPath(name)
            if path.is_absolute() or ".." in path.parts or not (name == "report.md" or path.parts[0] == "images"):
                raise ValueError(f"unexpected file {name!r} in the gateway's report.zip")
            target = folder.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files.read(name))
            written.append(target)
    return written


def predict_p50(url: str, count: int) -> float:
    """p50 in ms of ``count`` sequential /predict calls (concurrency 1) with the benchmark input."""
    session = requests.Session()
    payload = {"pixels": benchmark_pixels()}
    timings = []
    for index in range(count + 5):
        started = time.perf_counter()
        session.post(f"{url}/predict", json=payload, timeout=30).raise_for_status()
        if index >= 5:  # the first calls open connections; leave them out
            timings.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(timings)


def fan_out_overhead(gateway: str, count: int) -> str:
    """The gateway's /predict p50 next to each service's own /predict p50, at concurrency 1."""
    services = requests.get(f"{gateway}/services", timeout=30).json()["services"]
    lines = [f"/predict p50 at concurrency 1 ({count} calls each):"]
    service_p50 = {s["name"]: predict_p50(s["url"], count) for s in services if s["up"]}
    for name, p50 in service_p50.items():
        lines.append(f"  {name:8} service  {p50:7.2f} ms")
    gateway_p50 = predict_p50(gateway, count)
    slowest = max(service_p50.values()) if service_p50 else float("nan")
    lines.append(f"  gateway (all {len(services)} services) {gateway_p50:7.2f} ms = {gateway_p50 / slowest:.2f} x the "
                 "slowest service")
    return "\n".join(lines)


def format_table(comparison: dict) -> str:
    """The comparison as a fixed-width text table."""
    header = (f"{'model':17} {'framework':17} {'params':>7} {'epoch1 s':>8} {'s/epoch':>8} {'ms/step':>8} "
              f"{'val acc':>8} {'test acc':>8} {'infer ms':>8} {'p50 ms':>7} {'p99 ms':>7} {'req/s':>7}")
    lines = [header, "-" * len(header)]
    for row in comparison["models"]:
        training, serving = row.get("training") or {}, row.get("serving") or {}
        latency = serving.get("latency_ms") or {}
        framework = f"{row.get('framework') or '?'} {row.get('framework_version') or ''}".strip()
        lines.append(
            f"{row['model']:17} {framework:17} {_num(row.get('params'), '{:d}'):>7} "
            f"{_num(training.get('first_epoch_seconds'), '{:.1f}'):>8} "
            f"{_num(training.get('epoch_seconds'), '{:.1f}'):>8} {_num(training.get('ms_per_step'), '{:.1f}'):>8} "
            f"{_num(row.get('validation_accuracy'), '{:.4f}'):>8} {_num(row.get('test_accuracy'), '{:.4f}'):>8} "
            f"{_num((serving.get('inference_ms') or {}).get('p50'), '{:.3f}'):>8} "
            f"{_num(latency.get('p50'), '{:.2f}'):>7} {_num(latency.get('p99'), '{:.2f}'):>7} "
            f"{_num(serving.get('throughput_rps'), '{:.0f}'):>7}"
        )
    return "\n".join(lines)


def _num(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway", default="http://127.0.0.1:8000")
    parser.add_argument("--token", default=os.environ.get("API_TOKEN"),
                        help="the gateway's access token (default: $API_TOKEN; the gateway prints it at start)")
    parser.add_argument("--out", default="results", help="folder for comparison.json and the charts")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--train-limit", type=int)
    parser.add_argument("--models", help="comma-separated model names (default: all)")
    parser.add_argument("--parallel", action="store_true", help="train the services at the same time")
    parser.add_argument("--skip-train", action="store_true", help="compare the models as they are")
    parser.add_argument("--requests", type=int, default=200, help="benchmark requests per model")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--fan-out-calls", type=int, default=200,
                        help="measure the gateway's /predict against each service's (0: skip)")
    parser.add_argument("--report", metavar="DIR",
                        help="also write the gateway's report to DIR: report.html, report.md and images/")
    parser.add_argument("--report-only", action="store_true",
                        help="only write the report of the gateway's current state (needs --report): no training, "
                             "evaluation or benchmark")
    args = parser.parse_args(argv)
    gateway = args.gateway.rstrip("/")
    if args.report_only:
        if not args.report:
            parser.error("--report-only needs --report DIR")
        written = write_report(gateway, Path(args.report))
        print(f"wrote {written[0]}, {written[1]} and {len(written) - 2} images", file=sys.stderr)
        return 0
    api = requests.Session()  # training, evaluation and benchmarks need the token
    if args.token:
        api.headers["Authorization"] = f"Bearer {args.token}"
    models = args.models.split(",") if args.models else None
    selection = {"models": models} if models else {}

    if not args.skip_train:
        body = {**selection, "parallel": args.parallel}
        body.update({k: v for k, v in (("epochs", args.epochs), ("train_limit", args.train_limit)) if v})
        response = api.post(f"{gateway}/train", json=body, timeout=30)
        if response.status_code != 202:
            print(f"training was refused: {response.json().get('error')}", file=sys.stderr)
            return 1
        run = follow_run(gateway, response.json()["run_id"])
        if run["status"] != "succeeded":
            print(f"training {run['status']}: {run.get('error')}", file=sys.stderr)
            return 1
    print("evaluating...", file=sys.stderr)
    api.post(f"{gateway}/evaluate", json=selection, timeout=900).raise_for_status()
    print(f"benchmarking ({args.requests} requests per model, concurrency {args.concurrency})...", file=sys.stderr)
    api.post(f"{gateway}/benchmark", json={**selection, "requests": args.requests,
                                               "concurrency": args.concurrency}, timeout=3600).raise_for_status()

    comparison = comparison_with_verdict(gateway)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(comparison, indent=2))
    for fmt in ("png", "svg"):
        chart = requests.get(f"{gateway}/compare/chart.{fmt}", timeout=60)
        chart.raise_for_status()
        (out / f"chart.{fmt}").write_bytes(chart.content)
    print(format_table(comparison))
    if args.fan_out_calls:
        print()
        print(fan_out_overhead(gateway, args.fan_out_calls))
    print(f"\nwrote {out / 'comparison.json'}, {out / 'chart.png'}, {out / 'chart.svg'}", file=sys.stderr)
    if args.report:
        written = write_report(gateway, Path(args.report))
        print(f"wrote {written[0]}, {written[1]} and {len(written) - 2} images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
