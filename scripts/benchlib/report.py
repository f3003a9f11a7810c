"""What a benchmark prints and writes: the table, the ratios between endpoints, the JSON and the PNG chart."""

from __future__ import annotations

import json
import math
from pathlib import Path

COLUMNS = [  # (heading, result key, format)
    ("endpoint", "endpoint", "{}"),
    ("conc", "concurrency", "{:d}"),
    ("requests", "requests", "{:d}"),
    ("req/s", "rps", "{:.1f}"),
    ("p50 ms", "p50_ms", "{:.2f}"),
    ("p90 ms", "p90_ms", "{:.2f}"),
    ("p99 ms", "p99_ms", "{:.2f}"),
    ("errors", "errors", "{:d}"),
    ("CPU ms/req", "cpu_ms_per_request", "{:.2f}"),
    ("server cores", "server_cpu_cores", "{:.2f}"),
    ("client CPU ms/req", "client_cpu_ms_per_request", "{:.3f}"),
]


def _cell(fmt: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def table(results: list[dict]) -> str:
    """The results as an aligned text table, one row per endpoint and concurrency."""
    rows = [[heading for heading, _, _ in COLUMNS]]
    rows += [[_cell(fmt, result.get(key)) for _, key, fmt in COLUMNS] for result in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def ratios(results: list[dict], baseline: str) -> list[dict]:
    """Every other endpoint against ``baseline`` at each concurrency: req/s, p50 and CPU per request ratios."""
    by_key = {(r["endpoint"], r["concurrency"]): r for r in results}
    rows = []
    for result in results:
        base = by_key.get((baseline, result["concurrency"]))
        if result["endpoint"] == baseline or base is None:
            continue
        rows.append({
            "endpoint": result["endpoint"], "baseline": baseline, "concurrency": result["concurrency"],
            "rps_ratio": _ratio(result["rps"], base["rps"]),
            "p50_ratio": _ratio(result["p50_ms"], base["p50_ms"]),
            "cpu_ms_per_request_ratio": _ratio(result.get("cpu_ms_per_request"), base.get("cpu_ms_per_request")),
        })
    return rows


def _ratio(value, base):
    if value is None or base in (None, 0) or (isinstance(base, float) and math.isnan(base)):
        return None
    return value / base


def ratio_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = [f"ratios to {rows[0]['baseline']} (same run; above 1: more req/s, slower p50, more CPU per request)"]
    for row in rows:
        parts = [f"{label} x{row[key]:.2f}" if row[key] is not None else f"{label} -"
                 for label, key in (("req/s", "rps_ratio"), ("p50", "p50_ratio"),
                                    ("CPU/req", "cpu_ms_per_request_ratio"))]
        lines.append(f"  {row['endpoint']} @ {row['concurrency']}: " + ", ".join(parts))
    return "\n".join(lines)


def write_json(path: Path, document: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, allow_nan=False, default=_jsonable) + "\n")


def _jsonable(value):
    raise TypeError(f"{type(value).__name__} is not JSON")


def write_chart(path: Path, results: list[dict], title: str) -> None:
    """req/s and p50 latency (p99 dotted) by concurrency, one line per endpoint, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    endpoints = list(dict.fromkeys(r["endpoint"] for r in results))
    levels = sorted({r["concurrency"] for r in results})
    positions = {level: i for i, level in enumerate(levels)}
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for index, endpoint in enumerate(endpoints):
        rows = sorted((r for r in results if r["endpoint"] == endpoint), key=lambda r: r["concurrency"])
        x = [positions[r["concurrency"]] for r in rows]
        color = f"C{index}"
        left.plot(x, [r["rps"] for r in rows], marker="o", color=color, label=endpoint)
        right.plot(x, [r["p50_ms"] for r in rows], marker="o", color=color, label=f"{endpoint} p50")
        right.plot(x, [r["p99_ms"] for r in rows], marker=".", linestyle=":", color=color, label=f"{endpoint} p99")
    for axis, label in ((left, "requests/s"), (right, "latency (ms)")):
        axis.set_xticks(range(len(levels)), [str(level) for level in levels])
        axis.set_xlabel("concurrent connections")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    left.set_ylim(bottom=0)
    latencies = [r[k] for r in results for k in ("p50_ms", "p99_ms") if r.get(k) and r[k] > 0]
    if latencies and max(latencies) / min(latencies) > 30:  # endpoints far apart: a log scale shows them all
        right.set_yscale("log")
    left.set_title("throughput")
    right.set_title("latency")
    left.legend(fontsize="small")
    right.legend(fontsize="small")
    figure.suptitle(title, fontsize="medium")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=110)
    plt.close(figure)
