"""The report's document, its HTML and Markdown writings and its conclusion, from snapshots made here (no services):
the code shown exactly as a service sends it, every text escaped, the conclusion following the numbers."""

from __future__ import annotations

import copy
import re
from html import unescape

from markdown_it import MarkdownIt

from gateway.report_conclusion import conclusions
from gateway.report_document import build_document
from gateway.report_html import render_html
from gateway.report_markdown import escape, escape_block, render_markdown

TRICKY_CODE = ('class ConvNet(nn.Module):\n    """<script>alert("x")</script> & ``` fences ```` too"""\n\n'
               "    def forward(self, x):  # a | pipe, *stars*, _under_, [link](http://example.com)\n"
               "        return self.dense(x)\n")
LAYERS = [{"type": "Conv2D", "output_shape": [None, 26, 26, 32], "params": 320},
          {"type": "Dense", "output_shape": [None, 10], "params": 34506}]


def row(model: str, framework: str, accuracy: float, epoch_seconds: float, rps: float) -> dict:
    """A /compare row with every field the report reads."""
    return {
        "model": model, "service": framework, "up": True, "ready": True, "version": 1, "framework": framework,
        "framework_version": "1.0", "params": 34826, "threads": {}, "trained_at": "2026-01-01T00:00:00+00:00",
        "training": {"total_seconds": 3 * epoch_seconds, "epochs": 3, "first_epoch_seconds": epoch_seconds * 1.5,
                     "epoch_seconds": epoch_seconds, "ms_per_step": epoch_seconds * 2.37},
        "validation_accuracy": accuracy, "test_accuracy": accuracy, "test_correct": round(accuracy * 10000),
        "ci95": [accuracy - 0.003, accuracy + 0.003], "per_class_accuracy": [accuracy] * 10, "ece": 0.01,
        "confusion": [[0] * 10] * 10, "seeds": [1, 2, 3], "accuracy_mean": accuracy, "accuracy_sd": 0.001,
        "accuracy_min": accuracy - 0.001, "accuracy_max": accuracy + 0.001, "epoch_seconds_mean": epoch_seconds,
        "epoch_seconds_sd": 0.1, "warmup_ms": 12.5,
        "serving": {"latency_ms": {"p50": 1000 / rps, "p99": 3000 / rps}, "inference_ms": {"p50": 0.5, "p99": 1.0},
                    "throughput_rps": rps, "concurrency": 16, "errors": 0, "requests": 500},
    }


def service(name: str, models: list[str], with_facts: bool = True) -> dict:
    health = {"framework": name, "framework_version": "1.0", "versions": {}, "data_sha256": "ab" * 32,
              "threads": {"intra_op": 2, "inter_op": 1, "workers": 1, "cpu_limit": 2}}
    if with_facts:
        health["machine"] = {"cpu_model": "Test CPU <b>", "cpu_count": 2, "cpu_affinity": 2,
                             "memory_bytes": 8 * 1024**3, "platform": "Linux", "python": "3.11.7"}
        health["memory"] = {"rss_bytes": 600 * 1024**2, "peak_rss_bytes": 700 * 1024**2}
    entries = [{"name": m, "layers": LAYERS, "history": [{"epoch": 1, "loss": 0.3, "val_loss": 0.2,
                                                           "val_accuracy": 0.97, "seconds": 9.0}],
                **({"train_peak_rss_bytes": 900 * 1024**2} if with_facts else {})} for m in models]
    source = {"service": name, "models": {m: {
        part: {"file": f"services/{name}/backend.py", "qualname": "ConvNet", "first_line": 10, "last_line": 15,
               "lines": 4, "code": TRICKY_CODE} for part in ("network", "train_step")} for m in models}}
    return {"name": name, "url": "http://127.0.0.1:1", "up": True, "error": None, "health": health,
            "models": entries, "source": source if with_facts else None,
            "source_error": None if with_facts else "not reported by this service"}


def verdict(significant: bool) -> dict:
    pair = {"a": "torch", "b": "flax", "a_only": 60, "b_only": 20, "p_value": 0.0001 if significant else 0.4,
            "p_adjusted": 0.0003 if significant else 0.9, "significant": significant}
    return {"status": "ready", "n": 10000, "alpha": 0.05, "test": "exact McNemar, Holm-adjusted", "pairs": [pair],
            "agreement": {"torch": {"torch": 1.0, "flax": 0.99}, "flax": {"torch": 0.99, "flax": 1.0}},
            "summary": "torch is more accurate than flax <really>."}


def snapshot(significant: bool = True, with_facts: bool = True) -> dict:
    rows = [row("torch", "torch", 0.9861, 9.1, 800.0), row("flax", "jax", 0.9822, 12.0, 1200.0)]
    return {
        "generated_at": 1_800_000_000.0,
        "comparison": {"generated_at": 1_800_000_000.0, "models": rows, "verdict": verdict(significant)},
        "services": [service("torch", ["torch"], with_facts), service("jax", ["flax"], with_facts)],
        "gateway_machine": {"cpu_model": "Gateway CPU", "cpu_count": 2, "cpu_affinity": 2, "memory_bytes": 2**33,
                            "platform": "Linux", "python": "3.11.7"},
        "latest_run": None, "results_run": None,
        "benchmark": {"benchmark_id": "b1", "created_at": 1_800_000_000.0, "requests": 500, "concurrency": 16},
        "training_digits": {"seed": 1, "image": None, "error": "no service is configured"},
        "first_batches": {"seed": 1, "same_start": False, "batches": [], "error": None},
        "disagreements": {"status": "ready", "models": ["torch", "flax"], "items": []},
        "missing": [],
    }


FIGURES = {"accuracy": b"\x89PNG accuracy", "training": None, "architecture": None}


def text_of(html: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_the_code_is_shown_exactly_as_the_service_sends_it():
    document = build_document(snapshot(), FIGURES)
    html = render_html(document)
    assert "<script>" not in html and "<b>" not in html  # every text escaped
    blocks = [unescape(code) for code in re.findall(r"<pre><code>(.*?)</code></pre>", html, re.S)]
    assert blocks == [TRICKY_CODE] * 4
    markdown, files = render_markdown(document)
    fences = [t for t in MarkdownIt("commonmark").parse(markdown) if t.type == "fence"]
    assert [(t.info, t.content) for t in fences] == [("python", TRICKY_CODE)] * 4
    assert files == {"images/accuracy.png": FIGURES["accuracy"]}
    assert "4 lines of code" in text_of(html)


def test_facts_a_service_does_not_report_are_said_so():
    html = text_of(render_html(build_document(snapshot(with_facts=False), FIGURES)))
    assert "torch not reported by this service" in html  # the machine table
    assert "flax: source not reported by this service." in html
    with_facts = text_of(render_html(build_document(snapshot(), FIGURES)))
    assert "Test CPU <b>" in with_facts and "600 MiB" in with_facts and "flax 900 MiB" in with_facts


def test_the_conclusion_follows_the_numbers():
    said = " ".join(conclusions(snapshot(significant=True)))
    assert "torch is more accurate than flax (60 images only torch got right, 20 the other way; " \
           "p_adjusted=0.0003)" in said
    assert "Both implementations have the same 34,826 parameters" in said
    assert "Resident memory (RSS) of the serving processes: 600 MiB each." in said
    assert "torch trained fastest: 9.10 s per steady epoch, 21.6 ms per step, 1.00x; then flax 1.32x" in said
    assert "flax served fastest at concurrency 16 (1,200 req/s" in said and "torch slowest (800 req/s" in said
    said = " ".join(conclusions(snapshot(significant=False)))
    assert "No pair of models differs significantly at alpha 0.05 (exact McNemar, Holm over 1 pair)" in said

    faster = snapshot()
    faster["comparison"]["models"][1]["training"]["epoch_seconds"] = 4.55
    faster["comparison"]["models"][1]["serving"]["throughput_rps"] = 100.0
    said = " ".join(conclusions(faster))
    assert "flax (jax) trained fastest: 4.55 s per steady epoch" in said and "then torch 2.00x" in said
    assert "torch served fastest" in said

    computing = snapshot()
    computing["comparison"]["verdict"] = {"status": "computing"}
    computing["benchmark"] = None
    for row in computing["comparison"]["models"]:
        row["serving"] = None
    said = " ".join(conclusions(computing))
    assert "The verdict on which differences are significant is being computed" in said
    assert "There is no benchmark yet" in said


def test_a_missing_part_is_named_and_the_rest_is_shown():
    partial = copy.deepcopy(snapshot())
    partial["missing"] = ["first_batches"]
    partial["first_batches"] = {"error": "still being computed when the report was made; reload it shortly"}
    document = build_document(partial, FIGURES)
    assert not document.complete
    html = text_of(render_html(document))
    assert "Not in this report yet: first batches" in html
    assert "The first batches could not be had: still being computed" in html


def test_markdown_text_shows_as_written():
    parser = MarkdownIt("commonmark")
    for text in ("1. not a list", "# not a heading", "- not an item", "a_b*c*|d [x](y) <b> & `code`", "+ 3"):
        rendered = parser.render(escape_block(text))
        assert rendered == f"<p>{_html_text(text)}</p>\n", text
        assert parser.render(f"cell: {escape(text)}") == f"<p>cell: {_html_text(text)}</p>\n", text


def _html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
