"""The gateway's charts (gateway/chart.py) on made-up comparisons: no service needed.

The accuracy panel draws a bar per model in the model's colour with its Wilson interval as an error bar, and the
seeds' mean ± sd when there are several; colours stay distinct past eight models; renders are kept per state.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure
from PIL import Image

from gateway import chart
from gateway.chart import (
    Charts,
    accuracy_chart,
    draw_accuracy,
    draw_training_curves,
    model_colours,
    render_chart,
    run_histories,
    training_curves_chart,
)

EIGHT = ["keras-sequential", "keras-functional", "torch", "keras-torch", "tf-native", "tf-hybrid", "flax", "keras-jax"]
SVG = "{http://www.w3.org/2000/svg}"


def comparison(models: list[str] = EIGHT) -> dict:
    """A /compare answer with every figure the chart draws: odd rows trained over three seeds."""
    rows = []
    for index, name in enumerate(models):
        accuracy = 0.97 + 0.002 * index
        several = index % 2 == 1
        rows.append({
            "model": name, "framework": "keras", "test_accuracy": accuracy,
            "ci95": [round(accuracy - 0.0034, 6), round(accuracy + 0.0031, 6)],
            "seeds": [1, 2, 3] if several else [42], "accuracy_mean": accuracy - 0.001,
            "accuracy_sd": 0.0015 if several else 0.0,
            "training": {"epoch_seconds": 3.0 + index},
            "serving": {"latency_ms": {"p50": 2.0 + index, "p99": 5.0 + index}, "throughput_rps": 100.0 + index},
        })
    return {"generated_at": 0.0, "models": rows, "verdict": None}


def to_hex(rgba) -> str:
    return "#" + "".join(f"{round(channel * 255):02x}" for channel in rgba[:3])


# --- colours -------------------------------------------------------------------------------------------------------

def test_eight_models_have_eight_distinct_colours_and_others_ten_more():
    assert len(set(model_colours(EIGHT).values())) == 8
    others = [f"other-{i}" for i in range(10)]
    colours = model_colours(EIGHT + others)
    assert len(set(colours.values())) == 18
    assert len(set(model_colours(others[:8]).values())) == 8  # eight unknown models: distinct too
    assert all(len(c) == 7 and c.startswith("#") for c in colours.values())


def test_a_known_model_keeps_its_colour_whichever_others_are_shown():
    everyone = model_colours(EIGHT)
    assert model_colours(["torch"]) == {"torch": everyone["torch"]}
    assert model_colours(list(reversed(EIGHT))) == everyone
    assert model_colours(["fake-a", "flax", "fake-b"])["flax"] == everyone["flax"]


# --- the accuracy panel --------------------------------------------------------------------------------------------

def test_accuracy_panel_has_a_bar_and_an_interval_per_model_and_the_seeds_spread():
    rows = comparison()["models"]
    rows[2] = {**rows[2], "test_accuracy": None, "ci95": None}  # not trained: 'n/a', no bar
    axis = Figure().add_subplot()
    draw_accuracy(axis, rows)
    colours = model_colours(EIGHT)
    bars = [c for c in axis.containers if isinstance(c, BarContainer)]
    assert len(bars) == 7
    drawn = {patch.get_gid().removeprefix("accuracy-bar-"): patch for bar in bars for patch in bar.patches}
    assert sorted(drawn) == sorted(set(EIGHT) - {rows[2]["model"]})
    errorbars = [c for c in axis.containers if isinstance(c, ErrorbarContainer)]
    intervals = {c.lines[2][0].get_gid(): c.lines[2][0].get_segments()[0] for c in errorbars}
    for row in rows:
        name = row["model"]
        if row["test_accuracy"] is None:
            assert f"ci95-{name}" not in intervals
            continue
        assert drawn[name].get_height() == pytest.approx(row["test_accuracy"])
        assert to_hex(drawn[name].get_facecolor()) == colours[name]
        (x_low, low), (x_high, high) = intervals[f"ci95-{name}"]
        assert (low, high) == pytest.approx(row["ci95"])
        assert x_low == x_high == pytest.approx(drawn[name].get_x() + drawn[name].get_width() / 2)  # on the bar
        sd = intervals.get(f"seeds-{name}-sd")
        if len(row["seeds"]) > 1:
            (_, sd_low), (_, sd_high) = sd
            assert (sd_low, sd_high) == pytest.approx(
                (row["accuracy_mean"] - row["accuracy_sd"], row["accuracy_mean"] + row["accuracy_sd"]))
        else:
            assert sd is None  # one seed: no spread to show
    low, high = axis.get_ylim()
    assert low <= min(r["ci95"][0] for r in rows if r["ci95"]) and high >= max(r["ci95"][1] for r in rows if r["ci95"])


def svg_groups(svg: bytes) -> dict[str, ET.Element]:
    return {g.get("id"): g for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("id")}


def test_the_chart_svg_draws_each_models_bar_in_its_colour_with_its_interval():
    data = comparison()
    groups = svg_groups(render_chart(data, "svg"))
    colours = model_colours(EIGHT)
    for name in EIGHT:
        bar = groups[f"accuracy-bar-{name}"].find(f"{SVG}path")
        assert f"fill: {colours[name]}" in bar.get("style")
        assert groups[f"ci95-{name}"].find(f"{SVG}path") is not None
    assert sum(key.startswith("accuracy-bar-") for key in groups) == 8
    assert sum(key.startswith("ci95-") for key in groups) == 8
    assert sorted(key for key in groups if key.startswith("seeds-") and not key.endswith("-sd")) == sorted(
        f"seeds-{r['model']}" for r in data["models"] if len(r["seeds"]) > 1)


def test_a_rows_colour_from_compare_is_the_one_drawn():
    data = comparison(["fake-a", "fake-b"])
    data["models"][0]["colour"] = "#123456"
    groups = svg_groups(render_chart(data, "svg"))
    assert "fill: #123456" in groups["accuracy-bar-fake-a"].find(f"{SVG}path").get("style")


def test_accuracy_chart_alone_as_png_and_svg():
    rows = comparison()["models"]
    image = Image.open(io.BytesIO(accuracy_chart(rows, "png")))
    assert image.format == "PNG" and image.width > 600
    groups = svg_groups(accuracy_chart(rows, "svg"))
    assert sum(key.startswith("accuracy-bar-") for key in groups) == 8


# --- training curves -----------------------------------------------------------------------------------------------

def histories(epochs: int = 3) -> dict[str, list[dict]]:
    return {name: [{"epoch": e, "loss": 1.0 / e, "accuracy": 0.9, "val_loss": 1.1 / e,
                    "val_accuracy": 0.9 + 0.01 * e + 0.001 * i, "seconds": 2.0} for e in range(1, epochs + 1)]
            for i, name in enumerate(EIGHT)}


def test_training_curves_draw_every_model_with_a_point_per_epoch():
    figure = Figure()
    loss_axis, accuracy_axis = figure.subplots(1, 2)
    draw_training_curves(loss_axis, accuracy_axis, histories(4))
    colours = model_colours(EIGHT)
    for axis, prefix in ((loss_axis, "loss-"), (accuracy_axis, "val-accuracy-")):
        lines = {line.get_gid().removeprefix(prefix): line for line in axis.get_lines()
                 if line.get_gid().startswith(prefix)}
        assert sorted(lines) == sorted(EIGHT)
        for name, line in lines.items():
            assert list(line.get_xdata()) == [1, 2, 3, 4] and line.get_color() == colours[name]
    assert len(loss_axis.get_lines()) == 16  # validation loss dashed beside each training loss


def test_training_curves_chart_as_png_and_svg_and_from_a_run():
    run = {"run_id": "r", "models": {name: {"model": name, "history": history}
                                     for name, history in histories(2).items()}}
    assert run_histories(run) == histories(2)
    assert training_curves_chart(run_histories(run), "png").startswith(b"\x89PNG")
    groups = svg_groups(training_curves_chart(run_histories(run), "svg"))
    assert sum(key.startswith("val-accuracy-") for key in groups) == 8
    assert training_curves_chart({}, "png").startswith(b"\x89PNG")  # nothing trained yet: said in words


# --- the cache -----------------------------------------------------------------------------------------------------

def test_charts_render_a_state_once_and_again_when_an_interval_or_a_colour_changes(monkeypatch):
    renders = []
    charts = Charts(on_render=renders.append)
    monkeypatch.setattr(chart, "render_chart", lambda data, fmt: f"{len(renders)}".encode())
    data = comparison()
    first = charts.get(data, "svg")
    assert charts.get(comparison(), "svg") == first and renders == ["svg"]  # the same state: kept
    data["generated_at"] = 1.0
    data["verdict"] = {"status": "computing"}
    assert charts.get(data, "svg") == first  # what the chart does not draw does not count
    data["models"][0]["ci95"] = [0.95, 0.99]
    assert charts.get(data, "svg") != first and len(renders) == 2
    data["models"][0]["colour"] = "#000000"
    charts.get(data, "svg")
    data["models"][1]["accuracy_sd"] = 0.01
    charts.get(data, "svg")
    assert len(renders) == 4
