"""The report's figures as PNG bytes: test accuracy with its error bars and the training curves (the gateway's
chart module draws both, in the colours the page and the chart use), and the network's architecture.

Each figure is drawn from plain inputs (``figure_inputs``), and ``ReportFigures`` keeps the PNGs of the last few
sets of inputs: a report of an unchanged state costs no drawing. matplotlib's object API is used (no pyplot),
one drawing at a time (the chart module's lock).
"""

from __future__ import annotations

import io
import json

import matplotlib

matplotlib.use("Agg")  # no display: render to bytes
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from .chart import DPI, accuracy_chart, drawing_lock, model_colours, training_curves_chart  # noqa: E402
from .shared import SharedResults  # noqa: E402

KEPT_FIGURE_SETS = 8


def figure_inputs(rows: list[dict], histories: dict[str, list[dict]], layers: list[dict] | None) -> dict:
    """What the figures draw, as plain data (the key under which their PNGs are kept)."""
    return {
        "accuracy": [{key: r.get(key) for key in ("model", "colour", "test_accuracy", "ci95", "accuracy_mean",
                                                  "accuracy_sd", "seeds")} for r in rows],
        "training": {model: [{key: epoch.get(key) for key in ("epoch", "loss", "val_loss", "val_accuracy")}
                             for epoch in history] for model, history in histories.items()},
        "architecture": layers,
        "models": [r["model"] for r in rows],
    }


class ReportFigures:
    """The figures' PNGs by their inputs: each set drawn once however many reports ask at the same time."""

    def __init__(self):
        self._drawn = SharedResults(KEPT_FIGURE_SETS)

    def get(self, inputs: dict) -> dict[str, bytes | None]:
        """{"accuracy", "training", "architecture"} -> PNG bytes, or None where there is nothing to draw."""
        return self._drawn.get(json.dumps(inputs, sort_keys=True), lambda: draw_figures(inputs))


def draw_figures(inputs: dict) -> dict[str, bytes | None]:
    """Every figure of ``inputs`` (see ``figure_inputs``) as PNG bytes; None for one with nothing to draw."""
    rows, histories = inputs["accuracy"], inputs["training"]
    colours = model_colours(inputs["models"])
    colours.update({row["model"]: row["colour"] for row in rows if row.get("colour")})
    with drawing_lock:
        architecture = architecture_figure(inputs["architecture"])
    return {
        "accuracy": accuracy_chart(rows) if any(r["test_accuracy"] is not None for r in rows) else None,
        "training": training_curves_chart(histories, colours=colours) if any(histories.values()) else None,
        "architecture": architecture,
    }


def architecture_figure(layers: list[dict] | None) -> bytes | None:
    """The network as a row of blocks, input to output, each with its output shape and parameters."""
    if not layers:
        return None
    blocks = [("input", "28×28×1", "")] + [
        (layer["type"], "×".join(str(d) for d in layer["output_shape"] if d is not None),
         f"{layer['params']:,} params" if layer["params"] else "") for layer in layers]
    width = 1.2
    gap = 0.35
    figure = Figure(figsize=(1.45 * len(blocks) + 0.5, 2.2), dpi=DPI, layout="constrained")
    axis = figure.add_subplot()
    for index, (kind, shape, params) in enumerate(blocks):
        x = index * (width + gap)
        weighted = bool(params)
        axis.add_patch(FancyBboxPatch((x, 0.0), width, 1.0, boxstyle="round,pad=0.02,rounding_size=0.08",
                                      facecolor="#dbe9f6" if weighted else "#f2f2f2", edgecolor="#34495e"))
        axis.text(x + width / 2, 0.68, kind, ha="center", va="center", fontsize=8.5 if len(kind) < 12 else 7.5,
                  weight="bold")
        axis.text(x + width / 2, 0.42, shape, ha="center", va="center", fontsize=8)
        axis.text(x + width / 2, 0.18, params, ha="center", va="center", fontsize=7.5, color="#1f4e79")
        if index:
            axis.annotate("", (x - 0.02, 0.5), (x - gap + 0.02, 0.5),
                          arrowprops={"arrowstyle": "->", "color": "#34495e"})
    total = sum(layer["params"] for layer in layers)
    axis.set_title(f"{len(layers)} layers, {total:,} parameters", fontsize=10)
    axis.set_xlim(-0.1, len(blocks) * (width + gap))
    axis.set_ylim(-0.1, 1.1)
    axis.axis("off")
    return _png(figure)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
