"""The report's own figures, drawn with matplotlib into PNG bytes: test accuracy with its error bars, the training
curves, and the network's architecture.

Each figure is drawn from plain inputs (``figure_inputs``), and ``ReportFigures`` keeps the PNGs of the last few
sets of inputs: a report of an unchanged state costs no drawing. matplotlib's object API is used (no pyplot),
one drawing at a time.
"""

from __future__ import annotations

import io
import json
import threading

import matplotlib

matplotlib.use("Agg")  # no display: render to bytes
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from .shared import SharedResults  # noqa: E402

# Saturated colours, one per model in the rows' order (grey is left out: it reads as "no data").
MODEL_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
                 "#17becf", "#393b79", "#637939", "#8c6d31")
KEPT_FIGURE_SETS = 8
DPI = 100
_drawing = threading.Lock()  # one figure at a time: a few tenths of a second of CPU each


def model_colours(names: list[str]) -> dict[str, str]:
    """A colour per model, in the order given (cycling past the palette's twelve)."""
    return {name: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, name in enumerate(names)}


def figure_inputs(rows: list[dict], histories: dict[str, list[dict]], layers: list[dict] | None) -> dict:
    """What the figures draw, as plain data (the key under which their PNGs are kept)."""
    return {
        "accuracy": [{"model": r["model"], "test_accuracy": r.get("test_accuracy"), "ci95": r.get("ci95"),
                      "accuracy_mean": r.get("accuracy_mean"), "accuracy_sd": r.get("accuracy_sd"),
                      "seeds": len(r.get("seeds") or [])} for r in rows],
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
    """Every figure of ``inputs`` (see ``figure_inputs``) as PNG bytes."""
    colours = model_colours(inputs["models"])
    with _drawing:
        return {
            "accuracy": accuracy_chart(inputs["accuracy"], colours),
            "training": training_curves(inputs["training"], colours),
            "architecture": architecture_figure(inputs["architecture"]),
        }


def accuracy_chart(rows: list[dict], colours: dict[str, str]) -> bytes | None:
    """Test accuracy per model (bars) with the Wilson 95% interval (black error bars) and the seeds' mean ± sd
    (a white diamond with a grey bar); None when no model has an accuracy."""
    known = [r for r in rows if r["test_accuracy"] is not None]
    if not known:
        return None
    figure = Figure(figsize=(max(7.0, 1.1 * len(rows) + 2.0), 4.4), dpi=DPI, layout="constrained")
    axis = figure.add_subplot()
    positions = range(len(rows))
    lows, highs = [], []
    for x, row in zip(positions, rows, strict=True):
        accuracy = row["test_accuracy"]
        if accuracy is None:
            axis.annotate("n/a", (x, 0), xycoords=("data", "axes fraction"), xytext=(0, 4),
                          textcoords="offset points", ha="center")
            continue
        axis.bar(x, accuracy, width=0.62, color=colours[row["model"]], zorder=2)
        low, high = row["ci95"] if row["ci95"] else (accuracy, accuracy)
        axis.errorbar(x, accuracy, yerr=[[accuracy - low], [high - accuracy]], color="black", capsize=6,
                      linewidth=1.5, zorder=3)
        lows.append(low)
        highs.append(high)
        axis.annotate(f"{accuracy:.4f}", (x - 0.1, high), xytext=(0, 4), textcoords="offset points", ha="center",
                      fontsize=9)  # left of centre: the seeds' diamond stands right of it
        if row["accuracy_mean"] is not None and row["seeds"] > 1:
            mean, sd = row["accuracy_mean"], row["accuracy_sd"] or 0.0
            axis.errorbar(x + 0.18, mean, yerr=sd, fmt="D", color="#555555", markerfacecolor="white",
                          markersize=6, capsize=3, linewidth=1.2, zorder=4)
            lows.append(mean - sd)
            highs.append(mean + sd)
    spread = max(highs) - min(lows)
    axis.set_ylim(max(0.0, min(lows) - max(0.01, spread)), min(1.0, max(highs) + max(0.004, spread * 0.35)))
    axis.set_xticks(list(positions), [r["model"] for r in rows], rotation=15, ha="right")
    axis.set_ylabel("test accuracy (10,000 images)")
    axis.set_title("Test accuracy with its 95% interval; ◇ mean ± sd over seeds", fontsize=11)
    axis.grid(axis="y", alpha=0.3, zorder=0)
    return _png(figure)


def training_curves(histories: dict[str, list[dict]], colours: dict[str, str]) -> bytes | None:
    """Loss (training solid, validation dashed) and validation accuracy per epoch, every model on the same two
    plots; None without any history."""
    if not any(histories.values()):
        return None
    figure = Figure(figsize=(12.0, 4.4), dpi=DPI, layout="constrained")
    loss_axis, accuracy_axis = figure.subplots(1, 2)
    for model, history in histories.items():
        if not history:
            continue
        epochs = [epoch["epoch"] for epoch in history]
        colour = colours.get(model, "black")
        loss_axis.plot(epochs, [e["loss"] for e in history], "o-", color=colour, label=model)
        if all(e.get("val_loss") is not None for e in history):
            loss_axis.plot(epochs, [e["val_loss"] for e in history], "s--", color=colour, alpha=0.7)
        accuracy_axis.plot(epochs, [e["val_accuracy"] for e in history], "o-", color=colour, label=model)
    last_epoch = max(len(h) for h in histories.values())
    for axis, title, label in ((loss_axis, "Loss per epoch (training solid, validation dashed)", "loss"),
                               (accuracy_axis, "Validation accuracy per epoch", "validation accuracy")):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.set_xticks(range(1, last_epoch + 1))
        axis.grid(alpha=0.3)
    accuracy_axis.legend(fontsize=8, loc="lower right")
    return _png(figure)


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
