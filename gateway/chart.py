"""The comparison as one figure: accuracy, training time, serving latency and throughput.

A render costs the gateway 0.5-0.7 s of CPU, so ``Charts`` keeps the rendered bytes per comparison state
(what the figure draws) and renders each state once, however many ask at the same time.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")  # no display: render to bytes
import matplotlib.pyplot as plt  # noqa: E402

from .shared import SharedResults  # noqa: E402

FRAMEWORK_COLOURS = {"keras": "#d62728", "torch": "#ee7733", "tensorflow": "#1f77b4", "jax": "#2ca02c"}
OTHER_COLOUR = "#7f7f7f"
KEPT_CHARTS = 8  # rendered charts kept (states and formats)
_pyplot = threading.Lock()  # pyplot keeps global state: one figure at a time


class Charts:
    """Rendered charts by comparison state and format: each rendered once, however many ask at once."""

    def __init__(self, on_render: Callable[[str], None] | None = None):
        self.on_render = on_render or (lambda fmt: None)
        self._rendered = SharedResults(KEPT_CHARTS)

    def get(self, comparison: dict, fmt: str) -> bytes:
        """The chart of ``comparison`` as PNG or SVG bytes, rendered only when its state is new."""
        def render() -> bytes:
            self.on_render(fmt)
            return render_chart(comparison, fmt)

        return self._rendered.get((fmt, drawn_state(comparison)), render)


def drawn_state(comparison: dict) -> tuple:
    """What the chart draws of a comparison: per row its name, colour and the four figures."""
    state = []
    for row in comparison["models"]:
        serving = row.get("serving") or {}
        latency = serving.get("latency_ms") or {}
        state.append((row["model"], row.get("framework"), row.get("test_accuracy"),
                      (row.get("training") or {}).get("epoch_seconds"), latency.get("p50"), latency.get("p99"),
                      serving.get("throughput_rps")))
    return tuple(state)


def render_chart(comparison: dict, fmt: str) -> bytes:
    """A 2x2 figure of the comparison's models, as PNG or SVG bytes."""
    with _pyplot:
        return _render(comparison["models"], fmt)


def _render(rows: list[dict], fmt: str) -> bytes:
    names = [row["model"] for row in rows]
    colours = [FRAMEWORK_COLOURS.get(row.get("framework"), OTHER_COLOUR) for row in rows]
    figure, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    figure.suptitle(f"One MNIST CNN (34,826 parameters), {len(rows)} implementations", fontsize=14)

    accuracy = [row.get("test_accuracy") for row in rows]
    _bars(axes[0][0], names, accuracy, colours, "Test accuracy", "{:.4f}")
    known = [a for a in accuracy if a is not None]
    if known:
        axes[0][0].set_ylim(max(0.0, min(known) - 0.01), min(1.0, max(known) + 0.005))

    epoch_seconds = [(row.get("training") or {}).get("epoch_seconds") for row in rows]
    _bars(axes[0][1], names, epoch_seconds, colours, "Training: seconds per epoch (steady state)", "{:.1f} s")

    serving = [row.get("serving") or {} for row in rows]
    p50 = [(s.get("latency_ms") or {}).get("p50") for s in serving]
    p99 = [(s.get("latency_ms") or {}).get("p99") for s in serving]
    _bars(axes[1][0], names, p50, colours, "Serving latency over HTTP: p50 (bar), p99 (tick), ms", "{:.2f}")
    for index, value in enumerate(p99):
        if value is not None:
            axes[1][0].plot([index - 0.3, index + 0.3], [value, value], color="black", linewidth=2)
            axes[1][0].annotate(f"p99 {value:.2f}", (index, value), textcoords="offset points",
                                xytext=(0, 3), ha="center", fontsize=8)

    throughput = [s.get("throughput_rps") for s in serving]
    _bars(axes[1][1], names, throughput, colours, "Throughput, requests/s", "{:.0f}")

    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in FRAMEWORK_COLOURS.values()]
    figure.legend(handles, list(FRAMEWORK_COLOURS), loc="lower center", ncol=len(handles), bbox_to_anchor=(0.5, -0.04))
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, bbox_inches="tight", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def _bars(axis, names: list[str], values: list, colours: list[str], title: str, label: str) -> None:
    """Bars with their value written on top; 'n/a' where there is no figure yet."""
    heights = [v if v is not None else 0 for v in values]
    bars = axis.bar(range(len(names)), heights, color=colours)
    axis.set_xticks(range(len(names)), names, rotation=15, ha="right")
    axis.set_title(title)
    axis.grid(axis="y", alpha=0.3)
    for bar, value in zip(bars, values, strict=True):
        text = label.format(value) if value is not None else "n/a"
        axis.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), textcoords="offset points",
                      xytext=(0, 3), ha="center", fontsize=9)
