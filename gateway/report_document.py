"""The report's content as a small document tree (sections, paragraphs, tables, images, code), built from one
snapshot (report_data) and the figures' PNGs (report_figures). The HTML and the Markdown are two writings of
this same tree, so they hold the same sections, headings and numbers.

A table cell that shows one of ``GET /compare``'s figures carries that figure's place in /compare (``path``,
e.g. ``["models", "torch", "test_accuracy"]``: a model's row by name, then its keys; ``["verdict", "pairs",
"torch|tf-native", "p_adjusted"]`` a pair) and its exact value, so that the HTML can be read back and checked
against /compare.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from .report_conclusion import conclusions
from .report_format import MISSING, mebibytes, number, p_value, when

NOT_REPORTED = "not reported by this service"
FULL_TRAIN_SET = 54_000


# --- the tree -----------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """A table cell: its text, and for a figure of /compare its path there and exact value."""

    text: str
    path: list | None = None
    value: Any = None

    @property
    def numeric(self) -> bool:
        return isinstance(self.value, (int, float)) and not isinstance(self.value, bool)


@dataclass
class Table:
    id: str
    caption: str
    header: list[str]
    rows: list[list[Cell]]


@dataclass
class Paragraph:
    text: str
    kind: str = ""  # "note": missing or partial data, said in words


@dataclass
class Image:
    """A PNG shown as a figure; ``id`` names its file in the Markdown zip (images/<id>.png)."""

    id: str
    png: bytes
    alt: str
    caption: str = ""
    pixelated: bool = False  # digit grids: scaled up without smoothing


@dataclass
class ImageGrid:
    """Images side by side (small multiples), or a sentence in place of an image that could not be had."""

    id: str
    items: list[Image | Paragraph]


@dataclass
class Code:
    title: str
    caption: str
    text: str
    lines: int | None


@dataclass
class CodePair:
    """A model's network definition and training step, side by side."""

    model: str
    items: list[Code | Paragraph]


@dataclass
class GalleryItem:
    image: Image | None
    title: str
    lines: list[str]


@dataclass
class Gallery:
    id: str
    items: list[GalleryItem]


@dataclass
class Section:
    id: str
    title: str
    level: int
    blocks: list = field(default_factory=list)


@dataclass
class Document:
    title: str
    generated_at: float
    complete: bool  # every slow part arrived (else the report says which did not)
    sections: list[Section]

    def images(self) -> list[Image]:
        """Every image of the document, in order."""
        found = []

        def walk(blocks: list) -> None:
            for block in blocks:
                if isinstance(block, Image):
                    found.append(block)
                elif isinstance(block, ImageGrid):
                    walk(block.items)
                elif isinstance(block, Gallery):
                    found.extend(item.image for item in block.items if item.image is not None)
                elif isinstance(block, Section):
                    walk(block.blocks)

        walk(self.sections)
        return found


SECTIONS = (("setup", "Setup"), ("data", "Data"), ("network", "Network"), ("code", "Code"),
            ("training", "Training"), ("results", "Results"), ("serving", "Serving"), ("conclusion", "Conclusion"))


def build_document(snapshot: dict, figures: dict[str, bytes | None]) -> Document:
    """The report of ``snapshot`` with ``figures`` ({"accuracy", "training", "architecture"} -> PNG or None)."""
    builders = {"setup": _setup, "data": _data, "network": _network, "code": _code, "training": _training,
                "results": _results, "serving": _serving, "conclusion": _conclusion}
    sections = []
    for section_id, title in SECTIONS:
        section = Section(section_id, title, 2)
        section.blocks = builders[section_id](snapshot, figures)
        sections.append(section)
    count = len(snapshot["comparison"]["models"])
    title = f"One MNIST network in {count} implementation{'s' if count != 1 else ''}: the comparison"
    return Document(title, snapshot["generated_at"], not snapshot["missing"], sections)


# --- helpers over the snapshot ---------------------------------------------------------------------------------


def rows_of(snapshot: dict) -> list[dict]:
    return snapshot["comparison"]["models"]


def service_models(snapshot: dict) -> dict[str, dict]:
    """Model name -> its entry in its service's /models (services that answered)."""
    return {m["name"]: {**m, "service": s["name"]} for s in snapshot["services"] if s["up"] for m in s["models"]}


def model_histories(snapshot: dict) -> dict[str, list[dict]]:
    """Each model's training history per epoch: of the version served, else of its entry in the results run."""
    served = service_models(snapshot)
    run_models = (snapshot.get("results_run") or {}).get("models", {})
    histories = {}
    for row in rows_of(snapshot):
        history = (served.get(row["model"]) or {}).get("history") or (run_models.get(row["model"]) or {}).get(
            "history") or []
        histories[row["model"]] = history
    return histories


def reference_layers(snapshot: dict) -> list[dict] | None:
    """The layer table the architecture figure draws: a Keras model's (channels last) if any, else the first."""
    models = [m for m in service_models(snapshot).values() if m.get("layers")]
    keras = [m for m in models if m["name"].startswith("keras")]
    chosen = (keras or models or [None])[0]
    return chosen["layers"] if chosen else None


def _cell(row: dict, *keys, spec: str = "{}") -> Cell:
    """The cell of a row's figure at ``keys`` (e.g. "serving", "latency_ms", "p50"), with its /compare path (none
    when the row does not have that figure at all, as a row of a service that is down)."""
    value: Any = row
    for key in keys:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and isinstance(key, int) and key < len(value):
            value = value[key]
        else:
            return Cell(MISSING)
    text = number(value, spec) if not isinstance(value, list) else ", ".join(str(v) for v in value) or MISSING
    return Cell(text, ["models", row["model"], *keys], value)


def _png(data_url: str | None) -> bytes | None:
    """The bytes of a ``data:image/png;base64,...`` URL (None when there is none or it is not one)."""
    prefix = "data:image/png;base64,"
    if not data_url or not data_url.startswith(prefix):
        return None
    try:
        return base64.b64decode(data_url[len(prefix):], validate=True)
    except (binascii.Error, ValueError):
        return None


def _text(value) -> str:
    return MISSING if value is None else str(value)


# --- the sections ---------------------------------------------------------------------------------------------


def _setup(snapshot: dict, figures: dict) -> list:
    rows = rows_of(snapshot)
    services = snapshot["services"]
    blocks = [Paragraph(f"Made {when(snapshot['generated_at'])} by the gateway, from its comparison of "
                        f"{len(rows)} models in {len(services)} services (GET /compare at that moment: every figure "
                        "below is one of its).")]
    if snapshot["missing"]:
        parts = ", ".join(name.replace("_", " ") for name in snapshot["missing"])
        blocks.append(Paragraph(f"Not in this report yet: {parts} (still being computed, or failed: see their "
                                "sections). Reload the report in a few seconds.", "note"))
    blocks.append(Section("setup-machine", "Machine", 3, [_machine_table(snapshot)]))
    blocks.append(Section("setup-services", "Services", 3, _services_blocks(services)))
    blocks.append(Section("setup-training", "Training configuration", 3, _configuration_blocks(snapshot)))
    return blocks


def _machine_table(snapshot: dict) -> Table:
    table_rows = [_machine_row("gateway", snapshot["gateway_machine"])]
    for service in snapshot["services"]:
        if not service["up"]:
            table_rows.append([Cell(service["name"]), Cell(f"did not answer ({service['error']})"),
                               *[Cell(MISSING) for _ in range(5)]])
        elif service["health"].get("machine") is None:
            table_rows.append([Cell(service["name"]), Cell(NOT_REPORTED), *[Cell(MISSING) for _ in range(5)]])
        else:
            table_rows.append(_machine_row(service["name"], service["health"]["machine"]))
    return Table("machine", "Where each process ran", ["process", "CPU model", "cores", "cores it may use",
                                                        "memory", "platform", "Python"], table_rows)


def _machine_row(name: str, machine: dict) -> list[Cell]:
    return [Cell(name), Cell(_text(machine.get("cpu_model"))), Cell(_text(machine.get("cpu_count"))),
            Cell(_text(machine.get("cpu_affinity"))), Cell(mebibytes(machine.get("memory_bytes"))),
            Cell(_text(machine.get("platform"))), Cell(_text(machine.get("python")))]


def _services_blocks(services: list[dict]) -> list:
    table_rows = []
    hashes = {}
    for service in services:
        if not service["up"]:
            table_rows.append([Cell(service["name"]), Cell(f"did not answer ({service['error']})"),
                               *[Cell(MISSING) for _ in range(4)]])
            continue
        health = service["health"]
        versions = health.get("versions") or {}
        libraries = ", ".join(f"{k} {v}" for k, v in versions.items()) or MISSING
        threads = health.get("threads") or {}
        thread_text = (f"intra-op {_text(threads.get('intra_op'))}, inter-op {_text(threads.get('inter_op'))}, "
                       f"workers {_text(threads.get('workers'))}, CPU limit {_text(threads.get('cpu_limit'))}")
        hashes[service["name"]] = health.get("data_sha256")
        table_rows.append([
            Cell(service["name"]), Cell(f"{health.get('framework')} {health.get('framework_version')}"),
            Cell(libraries), Cell(thread_text), Cell(_text(health.get("data_sha256"))[:16] + "…"
                                                     if health.get("data_sha256") else MISSING),
            Cell(", ".join(m["name"] for m in service["models"])),
        ])
    blocks = [Table("services", "Each service's framework, libraries and threads",
                    ["service", "framework", "other libraries", "threads", "data sha256", "models"], table_rows)]
    known = {h for h in hashes.values() if h}
    if len(known) == 1:
        blocks.append(Paragraph(f"Every service that answered loaded the same MNIST arrays: sha256 {known.pop()}."))
    elif len(known) > 1:
        listed = "; ".join(f"{name} {value}" for name, value in hashes.items())
        blocks.append(Paragraph(f"The services loaded different data: {listed}.", "note"))
    else:
        blocks.append(Paragraph("No service reported the hash of its data.", "note"))
    return blocks


def _configuration_blocks(snapshot: dict) -> list:
    run, latest = snapshot.get("results_run"), snapshot.get("latest_run")
    blocks: list = []
    if run is None:
        blocks.append(Paragraph("No training run yet: the gateway has no run with a trained model (POST /train, "
                                "or scripts/compare, starts one).", "note"))
    else:
        config = run.get("config") or {}
        seeds = config.get("seeds") or [config.get("seed")]
        limit = config.get("train_limit")
        settings = [
            ("run", f"{run['run_id']}, {run['status']}"),
            ("started, finished", f"{when(run.get('created_at'))}, {when(run.get('finished_at'))}"),
            ("models", ", ".join(run.get("models", {}))),
            ("epochs", _text(config.get("epochs"))),
            ("batch size", _text(config.get("batch_size"))),
            ("learning rate (Adam)", _text(config.get("learning_rate"))),
            ("seeds", ", ".join(str(s) for s in seeds)),
            ("training images", f"{limit:,}" if limit else f"all ({FULL_TRAIN_SET:,})"),
            ("same start (shared initial weights and order)", "yes" if config.get("same_start") else "no"),
            ("promotion", _text(config.get("promote"))),
            ("models trained at the same time", "yes" if run.get("parallel") else "no, one after another"),
        ]
        blocks.append(Table("configuration", "The run the served models come from",
                            ["setting", "value"], [[Cell(k), Cell(v)] for k, v in settings]))
        blocks.extend(_run_failures(run))
    if latest is not None and (run is None or latest["run_id"] != run["run_id"]):
        state = latest["status"]
        text = f"The latest run, {latest['run_id']} (started {when(latest.get('created_at'))}), is {state}"
        if state in ("queued", "running"):
            text += f" ({latest.get('progress', 0) * 100:.0f}% done)"
        elif latest.get("error"):
            text += f": {latest['error']}"
        blocks.append(Paragraph(text + ".", "note"))
        blocks.extend(_run_failures(latest))
    return blocks


def _run_failures(run: dict) -> list[Paragraph]:
    return [Paragraph(f"In run {run['run_id']}, {model} {entry['status']}: {entry.get('error') or 'no reason given'}.",
                      "note")
            for model, entry in run.get("models", {}).items() if entry.get("status") in ("failed", "cancelled")]


def _data(snapshot: dict, figures: dict) -> list:
    digits = snapshot["training_digits"]
    digits_blocks: list
    png = _png(digits.get("image"))
    if png:
        first = " ".join(str(label) for label in (digits.get("labels") or [])[:16])
        digits_blocks = [Image("training-digits", png, "128 MNIST training digits",
                               f"The first 128 training digits in the order every framework shares under same_start "
                               f"(seed {digits['seed']}), as {digits['model']}'s service reads them; the first row's "
                               f"labels: {first}.", pixelated=True)]
    else:
        digits_blocks = [Paragraph(f"The training digits could not be had: {digits.get('error')}.", "note")]
    batches = snapshot["first_batches"]
    batch_blocks: list = []
    if batches.get("error") or "batches" not in batches:
        batch_blocks.append(Paragraph(f"The first batches could not be had: {batches.get('error')}.", "note"))
    else:
        mode = "the shared start (same_start)" if batches["same_start"] else "each framework's own shuffling"
        distinct = {b["sha256"] for b in batches["batches"] if b.get("sha256")}
        batch_blocks.append(Paragraph(
            f"The first batch of 128 images each model's own input pipeline yields for seed {batches['seed']}, with "
            f"{mode}: what each model saw first ({len(distinct)} different batch{'es' if len(distinct) != 1 else ''}"
            f" among {len(batches['batches'])} pipelines)."))
        items: list = []
        for batch in batches["batches"]:
            png = _png(batch.get("image"))
            if png:
                items.append(Image(f"first-batch-{batch['model']}", png, f"first training batch of {batch['model']}",
                                   f"{batch['model']}: {batch.get('pipeline')}; sha256 {batch['sha256'][:12]}…",
                                   pixelated=True))
            else:
                items.append(Paragraph(f"{batch['model']}: its service did not answer ({batch.get('error')}).",
                                       "note"))
        batch_blocks.append(ImageGrid("first-batches", items))
    return [Section("data-digits", "Training digits", 3, digits_blocks),
            Section("data-first-batches", "First batches", 3, batch_blocks)]


def _figure_or_note(figures: dict, key: str, alt: str, caption: str, missing: str, image_id: str | None = None):
    """The figure drawn under ``key`` as an image block, or a note saying why there is none."""
    if figures.get(key):
        return Image(image_id or key, figures[key], alt, caption)
    return Paragraph(missing, "note")


def _network(snapshot: dict, figures: dict) -> list:
    rows = rows_of(snapshot)
    architecture: list = []
    architecture.append(_figure_or_note(
        figures, "architecture", "the network's layers",
        "Input to output: each layer's output shape (batch left out) and parameters.",
        "No service reported its layers, so the architecture cannot be drawn."))
    sizes = {r["model"]: r.get("params") for r in rows}
    known = {v for v in sizes.values() if v is not None}
    if len(known) == 1:
        architecture.append(Paragraph(f"Every implementation that reported its size has {known.pop():,} parameters "
                                      f"({sum(v is not None for v in sizes.values())} of {len(rows)} models)."))
    elif known:
        architecture.append(Paragraph("The implementations differ in size: " + ", ".join(
            f"{m} {number(v, '{:,}')}" for m, v in sizes.items()) + ".", "note"))
    tables: list = []
    served = service_models(snapshot)
    for row in rows:
        model = served.get(row["model"])
        if not model or not model.get("layers"):
            tables.append(Paragraph(f"{row['model']}: its layers were not reported (its service did not answer).",
                                    "note"))
            continue
        layer_rows = [[Cell(str(i + 1)), Cell(layer["type"]),
                       Cell("(" + ", ".join("None" if d is None else str(d) for d in layer["output_shape"]) + ")"),
                       Cell(f"{layer['params']:,}", value=layer["params"])] for i, layer in enumerate(model["layers"])]
        layer_rows.append([Cell(""), Cell("total"), Cell(""), _cell(row, "params", spec="{:,}")])
        tables.append(Table(f"layers-{row['model']}",
                            f"{row['model']} ({row.get('framework')} {row.get('framework_version')}): "
                            f"{number(row.get('params'), '{:,}')} parameters",
                            ["#", "layer", "output shape", "params"], layer_rows))
    return [Section("network-architecture", "Architecture", 3, architecture),
            Section("network-layers", "Layer tables", 3, tables)]


def _sources(snapshot: dict) -> dict[str, dict | str]:
    """Model -> its /source entry ({"network", "train_step"}), or why there is none."""
    found: dict[str, dict | str] = {}
    for service in snapshot["services"]:
        if not service["up"]:
            continue
        source = service.get("source")
        for model in service["models"]:
            entry = ((source or {}).get("models") or {}).get(model["name"])
            found[model["name"]] = entry if entry else (service.get("source_error") or NOT_REPORTED)
    return found


def _code(snapshot: dict, figures: dict) -> list:
    sources = _sources(snapshot)
    blocks: list = [Paragraph("Each model's network definition and training step, as the running service reports "
                              "its own source (GET /source): the code that ran, not a copy that could drift from it.")]
    line_rows = []
    pairs = []
    for row in rows_of(snapshot):
        model = row["model"]
        entry = sources.get(model)
        framework = f"{row.get('framework') or MISSING} {row.get('framework_version') or ''}".strip()
        if not isinstance(entry, dict):
            why = entry or "its service did not answer"
            line_rows.append([Cell(model), Cell(framework), Cell(why), Cell(MISSING), Cell(MISSING)])
            pairs.append(Section(f"code-{model}", model, 3, [Paragraph(f"{model}: source {why}.", "note")]))
            continue
        parts = [entry.get("network"), entry.get("train_step")]
        counts = [(part or {}).get("lines") for part in parts]
        total = sum(counts) if all(c is not None for c in counts) else None
        line_rows.append([Cell(model), Cell(framework), Cell(number(counts[0])), Cell(number(counts[1])),
                          Cell(number(total))])
        items: list = []
        for title, part in zip(("network", "training step"), parts, strict=True):
            if not part:
                items.append(Paragraph(f"{title}: {NOT_REPORTED}.", "note"))
                continue
            caption = (f"{part.get('qualname')} in {part.get('file')}, lines {part.get('first_line')}-"
                       f"{part.get('last_line')}: {number(part.get('lines'))} lines of code")
            items.append(Code(title, caption, part.get("code") or "", part.get("lines")))
        pairs.append(Section(f"code-{model}", model, 3, [CodePair(model, items)]))
    blocks.append(Table("code-lines", "Lines each framework needed (without blank lines and comments)",
                        ["model", "framework", "network", "training step", "both"], line_rows))
    return blocks + pairs


def _training(snapshot: dict, figures: dict) -> list:
    blocks: list = []
    blocks.append(_figure_or_note(
        figures, "training", "loss and validation accuracy per epoch",
        "Every model's loss and validation accuracy per epoch, for the version served.",
        "No model has a training history yet.", image_id="training-curves"))
    table_rows = []
    for row in rows_of(snapshot):
        table_rows.append([
            Cell(row["model"]), _cell(row, "training", "epochs"),
            _cell(row, "training", "first_epoch_seconds", spec="{:.2f}"),
            _cell(row, "training", "epoch_seconds", spec="{:.2f}"),
            _cell(row, "training", "ms_per_step", spec="{:.1f}"),
            _cell(row, "training", "total_seconds", spec="{:.1f}"),
            _cell(row, "epoch_seconds_mean", spec="{:.2f}"), _cell(row, "epoch_seconds_sd", spec="{:.3f}"),
            _cell(row, "validation_accuracy", spec="{:.4f}"),
        ])
    blocks.append(Table("training-times", "Training time per model (steady: the epochs after the first, which "
                                          "pays for tracing and warm-up)",
                        ["model", "epochs", "first epoch s", "steady s/epoch", "ms/step", "total s",
                         "s/epoch over seeds: mean", "sd", "validation accuracy"], table_rows))
    return blocks


def _results(snapshot: dict, figures: dict) -> list:
    rows = rows_of(snapshot)
    verdict = snapshot["comparison"].get("verdict")
    accuracy: list = []
    accuracy.append(_figure_or_note(
        figures, "accuracy", "test accuracy per model with 95% intervals",
        "Test accuracy on the 10,000 test images. Error bars: the Wilson 95% interval; "
        "diamonds: the mean ± sd over the run's seeds. The axis does not start at 0.",
        "No model has a test accuracy yet."))
    accuracy.append(Table("accuracy", "Test accuracy", [
        "model", "version", "test accuracy", "95% low", "95% high", "correct of 10,000", "seeds", "mean over seeds",
        "sd", "min", "max", "ECE"], [[
            Cell(row["model"]), _cell(row, "version"), _cell(row, "test_accuracy", spec="{:.4f}"),
            _cell(row, "ci95", 0, spec="{:.4f}"), _cell(row, "ci95", 1, spec="{:.4f}"),
            _cell(row, "test_correct", spec="{:,}"), _cell(row, "seeds"), _cell(row, "accuracy_mean", spec="{:.4f}"),
            _cell(row, "accuracy_sd", spec="{:.4f}"), _cell(row, "accuracy_min", spec="{:.4f}"),
            _cell(row, "accuracy_max", spec="{:.4f}"), _cell(row, "ece", spec="{:.4f}"),
        ] for row in rows]))
    return [Section("results-accuracy", "Test accuracy", 3, accuracy),
            Section("results-verdict", "Verdict", 3, _verdict_blocks(verdict)),
            Section("results-per-class", "Per-class accuracy", 3, _per_class_blocks(rows)),
            Section("results-disagreements", "Disagreements", 3, _disagreement_blocks(snapshot))]


def _verdict_blocks(verdict: dict | None) -> list:
    if verdict is None:
        return [Paragraph("No verdict: fewer than two models could be judged on the test set.", "note")]
    if verdict.get("status") == "computing":
        return [Paragraph("The verdict is being computed (every served model's answers on the 10,000 test images); "
                          "reload the report in a few seconds.", "note")]
    blocks: list = [
        Paragraph(verdict["summary"]),
        Paragraph(f"Test: {verdict['test']} over {len(verdict['pairs'])} pairs, alpha {verdict['alpha']:g}, "
                  f"{verdict['n']:,} images. \"Only a\": images model a gets right and b does not."),
    ]
    pair_rows = []
    for pair in verdict["pairs"]:
        key = f"{pair['a']}|{pair['b']}"

        def cell(name: str, text: str, key: str = key, pair: dict = pair) -> Cell:
            return Cell(text, ["verdict", "pairs", key, name], pair[name])

        pair_rows.append([Cell(pair["a"]), Cell(pair["b"]), cell("a_only", f"{pair['a_only']:,}"),
                          cell("b_only", f"{pair['b_only']:,}"), cell("p_value", p_value(pair["p_value"])),
                          cell("p_adjusted", p_value(pair["p_adjusted"])),
                          cell("significant", "yes" if pair["significant"] else "no")])
    blocks.append(Table("pairs", "Every pair of models", ["a", "b", "only a", "only b", "p", "p adjusted (Holm)",
                                                          "significant"], pair_rows))
    agreement = verdict.get("agreement") or {}
    models = list(agreement)
    if models:
        blocks.append(Table("agreement", "Share of test images on which two models give the same label",
                            ["", *models], [[Cell(a), *[Cell(f"{agreement[a][b]:.4f}", ["verdict", "agreement", a, b],
                                                             agreement[a][b]) for b in models]] for a in models]))
    return blocks


def _per_class_blocks(rows: list[dict]) -> list:
    shown = [row for row in rows if row.get("per_class_accuracy")]
    if not shown:
        return [Paragraph("No per-class accuracy yet: it comes with the verdict.", "note")]
    return [Table("per-class", "Accuracy per true digit", ["model", *[str(d) for d in range(10)]],
                  [[Cell(row["model"]), *[_cell(row, "per_class_accuracy", d, spec="{:.3f}") for d in range(10)]]
                   for row in shown])]


def _disagreement_blocks(snapshot: dict) -> list:
    found = snapshot["disagreements"]
    if found.get("error"):
        return [Paragraph(f"The disagreements could not be had: {found['error']}.", "note")]
    if found["status"] == "computing":
        return [Paragraph("The disagreements come with the verdict, which is being computed; reload the report in a "
                          "few seconds.", "note")]
    if not found["items"]:
        if len(found["models"]) < 2:
            return [Paragraph("Fewer than two models were judged, so there is nothing to disagree on.", "note")]
        return [Paragraph(f"The {len(found['models'])} models give the same label to every test image.")]
    items = []
    for entry in found["items"]:
        png = _png(entry.get("image"))
        image = Image(f"disagreement-{entry['index']}", png, f"test image {entry['index']}",
                      pixelated=True) if png else None
        lines = [f"{model}: {answer['label']} {'✓' if answer['label'] == entry['label'] else '✗'} "
                 f"({answer['confidence']:.2f})" for model, answer in entry["predictions"].items()]
        items.append(GalleryItem(image, f"#{entry['index']}, truth {entry['label']}", lines))
    return [Paragraph(f"{len(items)} test digits on which the {len(found['models'])} judged models do not all agree, "
                      "the most split first; each model's label (✓ right, ✗ wrong) and its confidence."),
            Gallery("disagreements", items)]


def _serving(snapshot: dict, figures: dict) -> list:
    benchmark = snapshot.get("benchmark")
    rows = rows_of(snapshot)
    blocks: list = []
    if benchmark is None:
        blocks.append(Paragraph("No benchmark yet: serving latency and throughput are not measured (POST /benchmark "
                                "measures them).", "note"))
    else:
        blocks.append(Paragraph(f"From the latest benchmark ({benchmark['benchmark_id']}, "
                                f"{when(benchmark['created_at'])}): {benchmark['requests']} /predict calls per "
                                f"model at concurrency {benchmark['concurrency']}, over HTTP through the gateway's "
                                "client; each model's figures are from the latest benchmark that measured it."))
    table_rows = [[
        Cell(row["model"]), _cell(row, "serving", "concurrency"), _cell(row, "serving", "requests"),
        _cell(row, "serving", "errors"), _cell(row, "serving", "latency_ms", "p50", spec="{:.2f}"),
        _cell(row, "serving", "latency_ms", "p99", spec="{:.2f}"),
        _cell(row, "serving", "throughput_rps", spec="{:,.0f}"),
        _cell(row, "serving", "inference_ms", "p50", spec="{:.3f}"),
        _cell(row, "serving", "inference_ms", "p99", spec="{:.3f}"), _cell(row, "warmup_ms", spec="{:.1f}"),
    ] for row in rows]
    blocks.append(Table("serving", "Serving per model: latency and throughput over HTTP, the model call alone "
                                   "(in the service), and the warm-up after loading", [
        "model", "concurrency", "requests", "errors", "p50 ms", "p99 ms", "req/s", "model call p50 ms",
        "model call p99 ms", "warm-up ms"], table_rows))
    blocks.append(_memory_table(snapshot["services"]))
    return blocks


def _memory_table(services: list[dict]) -> Table:
    """Each service's resident memory now and at its peak (serving), and each model's peak while training."""
    memory_rows = []
    for service in services:
        if not service["up"]:
            memory_rows.append([Cell(service["name"]), Cell("did not answer"), Cell(MISSING), Cell(MISSING)])
            continue
        memory = service["health"].get("memory")
        serving = ([Cell(mebibytes(memory.get("rss_bytes")), value=memory.get("rss_bytes")),
                    Cell(mebibytes(memory.get("peak_rss_bytes")), value=memory.get("peak_rss_bytes"))]
                   if memory is not None else [Cell(NOT_REPORTED), Cell(MISSING)])
        training = [f"{m['name']} {mebibytes(m['train_peak_rss_bytes'])}" for m in service["models"]
                    if m.get("train_peak_rss_bytes") is not None]
        reported = any("train_peak_rss_bytes" in m for m in service["models"])
        memory_rows.append([Cell(service["name"]), *serving,
                            Cell(", ".join(training) if training else "not trained yet" if reported else NOT_REPORTED)])
    return Table("memory", "Each service's memory: resident set (RSS) of the process serving, now and at its peak, "
                           "and its peak while training each model",
                 ["service", "RSS serving", "peak RSS", "peak RSS training"], memory_rows)


def _conclusion(snapshot: dict, figures: dict) -> list:
    return [Paragraph(text) for text in conclusions(snapshot)]
