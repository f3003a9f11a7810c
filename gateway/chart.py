"""The comparison drawn with matplotlib: the gateway's chart, the accuracy chart alone and the training curves.

- ``model_colours``: one colour per model, the one mapping the chart, ``/compare``'s rows (``colour``) and so the
  web page all use.
- ``render_chart``: the 2x2 figure of ``GET /compare/chart.png|svg`` (accuracy with its error bars, seconds per
  epoch, serving latency, throughput); ``Charts`` keeps its renders per comparison state.
- ``accuracy_chart`` and ``training_curves_chart``: figures of their own, as PNG or SVG bytes, for documents;
  ``draw_accuracy`` and ``draw_training_curves`` draw the same on axes one provides.

A render costs the gateway 0.5-0.7 s of CPU, so ``Charts`` keeps the rendered bytes per comparison state
(what the figure draws) and renders each state once, however many ask at the same time. matplotlib's object
API is used (no pyplot), one figure at a time.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable

import matplotlib

matplotlib.use("Agg")  # no display: render to bytes
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .shared import SharedResults  # noqa: E402

# The eight models keep their colours whichever others are shown: each service's first model has its framework's
# colour (keras red, torch orange, tensorflow blue, jax green), its second a neighbouring hue of matplotlib's tab10.
KNOWN_MODEL_COLOURS = {
    "keras-sequential": "#d62728", "keras-functional": "#9467bd",
    "torch": "#ff7f0e", "keras-torch": "#8c564b",
    "tf-native": "#1f77b4", "tf-hybrid": "#17becf",
    "flax": "#2ca02c", "keras-jax": "#bcbd22",
}
# Other models take these in the order they come, then the palette again: tab10's pink, then tab20's light shades
# (grey is left out everywhere: it reads as "no data").
OTHER_MODEL_COLOURS = ("#e377c2", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2",
                       "#dbdb8d", "#9edae5")
CI_COLOUR = "black"  # the Wilson 95% interval's error bar
SEEDS_COLOUR = "#555555"  # the seeds' mean ± sd: a white diamond on a grey bar
KEPT_CHARTS = 8  # rendered charts kept (states and formats)
DPI = 100
drawing_lock = threading.Lock()  # one figure at a time: a render is a few tenths of a second of CPU


def model_colours(names: Iterable[str]) -> dict[str, str]:
    """A colour (``#rrggbb``) per model: the eight known models' own, the others' in the order given.

    Distinct for the eight known models plus ten others; past that the others' colours repeat."""
    colours = {}
    others = 0
    for name in names:
        if name in colours:
            continue
        if name in KNOWN_MODEL_COLOURS:
            colours[name] = KNOWN_MODEL_COLOURS[name]
        else:
            colours[name] = OTHER_MODEL_COLOURS[others % len(OTHER_MODEL_COLOURS)]
            others += 1
    return colours


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
    """What the chart draws of a comparison: per row its name, colour, accuracy with its interval and seeds,
    seconds per epoch, latency and throughput."""
    rows = comparison["models"]
    colours = _colours_of(rows)
    state = []
    for row in rows:
        serving = row.get("serving") or {}
        latency = serving.get("latency_ms") or {}
        state.append((row["model"], colours[row["model"]], row.get("test_accuracy"), tuple(row.get("ci95") or ()),
                      len(row.get("seeds") or ()), row.get("accuracy_mean"), row.get("accuracy_sd"),
                      (row.get("training") or {}).get("epoch_seconds"), latency.get("p50"), latency.get("p99"),
                      serving.get("throughput_rps")))
    return tuple(state)


def render_chart(comparison: dict, fmt: str) -> bytes:
    """A 2x2 figure of the comparison's models, as PNG or SVG bytes: test accuracy with its 95% interval (and the
    seeds' mean ± sd), steady seconds per epoch, serving latency p50/p99 and throughput."""
    rows = comparison["models"]
    names = [row["model"] for row in rows]
    colours = _colours_of(rows)
    bar_colours = [colours[name] for name in names]
    with drawing_lock:
        figure = Figure(figsize=(12, 8), dpi=DPI, layout="constrained")
        axes = figure.subplots(2, 2)
        figure.suptitle(f"One MNIST CNN (34,826 parameters), {len(rows)} implementations", fontsize=14)

        draw_accuracy(axes[0][0], rows, colours)

        epoch_seconds = [(row.get("training") or {}).get("epoch_seconds") for row in rows]
        _bars(axes[0][1], names, epoch_seconds, bar_colours, "Training: seconds per epoch (steady state)", "{:.1f} s")

        serving = [row.get("serving") or {} for row in rows]
        p50 = [(s.get("latency_ms") or {}).get("p50") for s in serving]
        p99 = [(s.get("latency_ms") or {}).get("p99") for s in serving]
        _bars(axes[1][0], names, p50, bar_colours, "Serving latency over HTTP: p50 (bar), p99 (tick), ms", "{:.2f}")
        for index, value in enumerate(p99):
            if value is not None:
                axes[1][0].plot([index - 0.3, index + 0.3], [value, value], color="black", linewidth=2)
                axes[1][0].annotate(f"p99 {value:.2f}", (index, value), textcoords="offset points",
                                    xytext=(0, 3), ha="center", fontsize=8)

        throughput = [s.get("throughput_rps") for s in serving]
        _bars(axes[1][1], names, throughput, bar_colours, "Throughput, requests/s", "{:.0f}")
        return _encode(figure, fmt)


def accuracy_chart(rows: list[dict], fmt: str = "png") -> bytes:
    """The accuracy panel alone (see ``draw_accuracy``) as PNG or SVG bytes; ``rows`` are ``/compare``'s."""
    with drawing_lock:
        figure = Figure(figsize=(max(7.0, 1.1 * len(rows) + 2.0), 4.4), dpi=DPI, layout="constrained")
        draw_accuracy(figure.add_subplot(), rows, _colours_of(rows))
        return _encode(figure, fmt)


def draw_accuracy(axis: Axes, rows: list[dict], colours: dict[str, str] | None = None) -> None:
    """Test accuracy per model on ``axis``: a bar in the model's colour, its Wilson 95% interval (``ci95``) as a
    black error bar, and, when the model has several seeds, their mean ± sd as a white diamond on a grey error bar
    right of it. 'n/a' for a model without an accuracy.

    In SVG each model's bar, interval and seeds' marker are the groups ``accuracy-bar-<model>``,
    ``ci95-<model>`` and ``seeds-<model>``."""
    colours = colours or _colours_of(rows)
    lows, highs = [], []
    for x, row in enumerate(rows):
        name, accuracy = row["model"], row.get("test_accuracy")
        if accuracy is None:
            axis.annotate("n/a", (x, 0), xycoords=("data", "axes fraction"), xytext=(0, 4),
                          textcoords="offset points", ha="center", fontsize=9)
            continue
        bars = axis.bar(x, accuracy, width=0.62, color=colours[name], zorder=2)
        bars.patches[0].set_gid(f"accuracy-bar-{name}")
        low, high = row.get("ci95") or (accuracy, accuracy)
        interval = axis.errorbar(x, accuracy, yerr=[[accuracy - low], [high - accuracy]], fmt="none",
                                 ecolor=CI_COLOUR, capsize=6, linewidth=1.5, zorder=3)
        interval.lines[2][0].set_gid(f"ci95-{name}")  # the vertical line: what SVG readers look for
        lows.append(low)
        highs.append(high)
        axis.annotate(f"{accuracy:.4f}", (x - 0.1, high), xytext=(0, 4), textcoords="offset points", ha="center",
                      fontsize=9)  # left of centre: the seeds' diamond stands right of it
        seeds = len(row.get("seeds") or ())
        if seeds > 1 and row.get("accuracy_mean") is not None:
            mean, sd = row["accuracy_mean"], row.get("accuracy_sd") or 0.0
            spread = axis.errorbar(x + 0.2, mean, yerr=sd, fmt="D", color=SEEDS_COLOUR, markerfacecolor="white",
                                   markersize=6, capsize=3, linewidth=1.2, zorder=4)
            spread.lines[0].set_gid(f"seeds-{name}")
            spread.lines[2][0].set_gid(f"seeds-{name}-sd")
            lows.append(mean - sd)
            highs.append(mean + sd)
    if lows:
        spread = max(highs) - min(lows)
        axis.set_ylim(max(0.0, min(lows) - max(0.01, spread)), min(1.0, max(highs) + max(0.004, spread * 0.35)))
    axis.set_xticks(range(len(rows)), [row["model"] for row in rows], rotation=15, ha="right")
    axis.set_xlim(-0.6, len(rows) - 0.4)
    axis.set_title("Test accuracy, 95% interval (black); ◇ mean ± sd over seeds", fontsize=11)
    axis.grid(axis="y", alpha=0.3, zorder=0)


def training_curves_chart(histories: dict[str, list[dict]], fmt: str = "png",
                          colours: dict[str, str] | None = None) -> bytes:
    """Loss and validation accuracy per epoch of every model on one pair of plots (see ``draw_training_curves``),
    as PNG or SVG bytes. ``histories``: model -> its epochs, as a run's ``models[<name>]["history"]`` (see
    ``run_histories``); the colours are ``model_colours`` of its models unless given."""
    with drawing_lock:
        figure = Figure(figsize=(12.0, 4.4), dpi=DPI, layout="constrained")
        loss_axis, accuracy_axis = figure.subplots(1, 2)
        draw_training_curves(loss_axis, accuracy_axis, histories, colours)
        return _encode(figure, fmt)


def draw_training_curves(loss_axis: Axes, accuracy_axis: Axes, histories: dict[str, list[dict]],
                         colours: dict[str, str] | None = None) -> None:
    """Per model in its colour: training loss (solid) and validation loss (dashed, when recorded) per epoch on
    ``loss_axis``, validation accuracy per epoch on ``accuracy_axis``. Says so when there is no epoch yet."""
    colours = colours or model_colours(histories)
    drawn = {model: history for model, history in histories.items() if history}
    for model, history in drawn.items():
        epochs = [epoch["epoch"] for epoch in history]
        colour = colours.get(model) or model_colours([model])[model]
        loss_axis.plot(epochs, [e.get("loss") for e in history], "o-", color=colour, label=model, gid=f"loss-{model}")
        if all(e.get("val_loss") is not None for e in history):
            loss_axis.plot(epochs, [e["val_loss"] for e in history], "s--", color=colour, alpha=0.7,
                           gid=f"val-loss-{model}")
        accuracy_axis.plot(epochs, [e.get("val_accuracy") for e in history], "o-", color=colour, label=model,
                           gid=f"val-accuracy-{model}")
    last_epoch = max((len(history) for history in drawn.values()), default=0)
    for axis, title, label in ((loss_axis, "Loss per epoch (training solid, validation dashed)", "loss"),
                               (accuracy_axis, "Validation accuracy per epoch", "validation accuracy")):
        axis.set_title(title, fontsize=11)
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        if last_epoch:
            axis.set_xticks(range(1, last_epoch + 1))
        else:
            axis.text(0.5, 0.5, "no epoch finished yet", transform=axis.transAxes, ha="center", va="center")
    if drawn:
        accuracy_axis.legend(fontsize=8, loc="lower right")


def run_histories(run: dict) -> dict[str, list[dict]]:
    """model -> its history per epoch, from a run as ``GET /runs/<run_id>`` answers it (with several seeds: the
    seed trained last, or training now)."""
    return {name: entry.get("history") or [] for name, entry in (run.get("models") or {}).items()}


def _colours_of(rows: list[dict]) -> dict[str, str]:
    """The rows' own ``colour`` (``/compare`` gives one), else ``model_colours`` of their models."""
    colours = model_colours(row["model"] for row in rows)
    colours.update({row["model"]: row["colour"] for row in rows if row.get("colour")})
    return colours


def _bars(axis: Axes, names: list[str], values: list, colours: list[str], title: str, label: str) -> None:
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


def _encode(figure: Figure, fmt: str) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, bbox_inches="tight", dpi=DPI)
    return buffer.getvalue()
