"""The gateway's report (GET /report, GET /report.md) over a real small run: the torch and tf services (four
models) trained on 2,000 images for one epoch with two seeds, evaluated by the verdict, benchmarked.

The page is rendered by Debian's Chromium (Playwright) under the report's own Content-Security-Policy; its
figures are read back and compared with /compare; the Markdown is parsed with a CommonMark parser. Other
gateways show the cases without results: no run yet, a service down, a failed model.
Screenshots are saved in test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import zipfile
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from markdown_it import MarkdownIt
from PIL import Image

from servekit.testing import authorized, free_port
from tests.conftest import SERVICES, start_gateway, start_service

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
SECTIONS = ["setup", "data", "network", "code", "training", "results", "serving", "conclusion"]
REPORT_SERVICES = ("torch", "tf")
MODELS = [model for name in REPORT_SERVICES for model in SERVICES[name][1]]
RUN = {"epochs": 1, "train_limit": 2000, "seeds": [1, 2]}
API = authorized()


def wait_for(what: str, check, timeout: float = 600.0, every: float = 1.0):
    """Call ``check`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s")


def finished_run(gateway_url: str, run_id: str, timeout: float = 900.0) -> dict:
    def ended():
        run = requests.get(f"{gateway_url}/runs/{run_id}", timeout=30).json()
        return run if run["status"] not in ("queued", "running") else None

    return wait_for(f"run {run_id}", ended, timeout)


def complete_report(gateway_url: str, timeout: float = 600.0) -> requests.Response:
    """GET /report once every part of it is in (the verdict, the first batches, the disagreements)."""
    def complete():
        response = requests.get(f"{gateway_url}/report", timeout=300)
        assert response.status_code == 200, response.text[:500]
        return response if response.headers["X-Report-Complete"] == "true" else None

    return wait_for("a complete report", complete, timeout, every=2.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The torch and tf services and a gateway, after a run, the verdict and a benchmark."""
    services = {name: start_service(name, tmp_path_factory.mktemp(f"report-{name}")) for name in REPORT_SERVICES}
    data_dir = tmp_path_factory.mktemp("report-gateway")
    gateway = start_gateway({name: s.url for name, s in services.items()}, data_dir)
    gateway.services = services
    try:
        accepted = API.post(f"{gateway.url}/train", json=RUN, timeout=30)
        assert accepted.status_code == 202, accepted.text
        run = finished_run(gateway.url, accepted.json()["run_id"])
        assert run["status"] == "succeeded", run
        benchmark = API.post(f"{gateway.url}/benchmark", json={"requests": 40, "concurrency": 2}, timeout=600)
        assert benchmark.status_code == 200, benchmark.text
        started = time.perf_counter()
        complete_report(gateway.url)
        gateway.first_report_s = time.perf_counter() - started
        yield gateway
    finally:
        gateway.stop()
        for service in services.values():
            service.stop()


# --- reading the report back --------------------------------------------------------------------------------


class ReportParser(HTMLParser):
    """The headings, the figures carrying their /compare place, the code blocks and the images of a report."""

    def __init__(self):
        super().__init__()
        self.headings: list[tuple[int, str]] = []
        self.figures: list[dict] = []  # {"path", "value", "text"}
        self.code: dict[tuple[str, str], str] = {}  # (model, "network" | "training step") -> code
        self.images: list[str] = []
        self.sections: list[str] = []
        self._capture: dict | None = None
        self._model: str | None = None
        self._part: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if tag == "img":
            self.images.append(attrs["src"])
        if re.fullmatch(r"h[1-6]", tag):
            self._capture = {"kind": "heading", "level": int(tag[1]), "text": ""}
        elif "data-compare" in attrs:
            self._capture = {"kind": "figure", "path": json.loads(attrs["data-compare"]),
                             "value": json.loads(attrs["data-value"]), "text": ""}
        elif tag == "div" and "side-by-side" in (attrs.get("class") or ""):
            self._model = attrs["data-model"]
        elif tag == "figure" and attrs.get("data-part"):
            self._part = attrs["data-part"]
        elif tag == "code" and self._part:
            self._capture = {"kind": "code", "text": ""}

    def handle_data(self, data):
        if self._capture is not None:
            self._capture["text"] += data

    def handle_endtag(self, tag):
        capture = self._capture
        if capture is None:
            return
        if capture["kind"] == "heading" and re.fullmatch(r"h[1-6]", tag):
            self.headings.append((capture["level"], " ".join(capture["text"].split())))
        elif capture["kind"] == "figure" and tag == "td":
            self.figures.append(capture)
        elif capture["kind"] == "code" and tag == "code":
            self.code[(self._model, self._part)] = capture["text"]
            self._part = None
        else:
            return
        self._capture = None


def parse_report(html: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(html)
    return parser


def in_compare(comparison: dict, path: list):
    """The figure at a report cell's path in /compare: a model's row by name, a verdict pair by "a|b"."""
    value = comparison
    for index, key in enumerate(path):
        if index == 1 and path[0] == "models":
            value = next(row for row in value if row["model"] == key)
        elif path[:2] == ["verdict", "pairs"] and index == 2:
            value = next(pair for pair in value if f"{pair['a']}|{pair['b']}" == key)
        else:
            value = value[key]
    return value


def markdown_headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of every heading, as a CommonMark parser reads the Markdown."""
    tokens = MarkdownIt("commonmark").parse(text)
    return [(int(token.tag[1]), " ".join(tokens[i + 1].content.split()))
            for i, token in enumerate(tokens) if token.type == "heading_open"]


def count_bars(png: bytes) -> int:
    """Bars in a bar chart's picture: the most frequent number of coloured runs across its pixel rows (axes, text,
    error bars and grid are black or grey; a row through a marker may split a bar, but few rows do)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    pixels = image.load()
    counts: dict[int, int] = {}
    for y in range(height):
        runs, length = 0, 0
        for x in range(width):
            r, g, b = pixels[x, y]
            if max(r, g, b) - min(r, g, b) > 60:
                length += 1
            else:
                runs += length >= 8
                length = 0
        runs += length >= 8
        if runs:
            counts[runs] = counts.get(runs, 0) + 1
    return max(counts, key=counts.get) if counts else 0


# --- the report of the trained stack ------------------------------------------------------------------------


def test_the_report_renders_under_its_csp_with_every_section(trained, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    requested, failed, console_errors, page_errors = [], [], [], []
    page.on("request", lambda r: requested.append(r.url))
    page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    try:
        response = page.goto(f"{trained.url}/report")
        page.wait_for_load_state("load")
        assert response.status == 200
        assert response.headers["content-security-policy"] == REPORT_CSP
        assert failed == [] and console_errors == [] and page_errors == []
        assert [url for url in requested if not url.startswith("data:")] == [f"{trained.url}/report"]
        for section in SECTIONS:
            assert page.locator(f"section#{section} > h2").count() == 1, section
        assert page.locator("script").count() == 0
        images = page.locator("img")
        assert images.count() > 10
        assert page.evaluate("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
        assert page.locator("#accuracy tbody tr").count() == len(MODELS)
        assert page.locator("#pairs tbody tr").count() == len(MODELS) * (len(MODELS) - 1) // 2
        assert page.locator("#first-batches figure").count() == len(MODELS)
        assert page.locator("#disagreements figure").count() > 0
        assert page.locator("section#conclusion p").count() >= 4
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        printed = page.pdf(format="A4")  # printable: Chromium prints it (print styles applied)
        assert printed.startswith(b"%PDF")
        (ARTIFACTS / "report.pdf").write_bytes(printed)
        accuracy = page.locator("#figure-accuracy img")
        accuracy.screenshot(path=str(ARTIFACTS / "report-accuracy.png"))
        assert count_bars(accuracy.screenshot()) == len(MODELS)
    finally:
        context.close()


def report_beside_compare(gateway_url: str) -> tuple[str, dict, float]:
    """The report's HTML and /compare of the same state (asked before and after it: unchanged), and the report's
    time in seconds."""
    before = requests.get(f"{gateway_url}/compare", timeout=60).json()
    started = time.perf_counter()
    html = requests.get(f"{gateway_url}/report", timeout=300).text
    seconds = time.perf_counter() - started
    after = requests.get(f"{gateway_url}/compare", timeout=60).json()
    for comparison in (before, after):
        comparison.pop("generated_at")
    assert before == after, "the state changed while the report was made"
    return html, before, seconds


def assert_figures_are_compares(report: ReportParser, comparison: dict) -> None:
    """Every figure the report shows from /compare has /compare's value, and its text shows that value."""
    for figure in report.figures:
        expected = in_compare(comparison, figure["path"])
        assert figure["value"] == expected, figure["path"]
        shown = figure["text"].replace(",", "").strip()
        if isinstance(expected, float) and re.fullmatch(r"-?\d+(\.\d+)?", shown):
            decimals = len(shown.partition(".")[2])
            assert abs(float(shown) - expected) <= 0.5 * 10**-decimals + 1e-12, (figure["path"], shown)


def test_every_figure_in_the_report_is_the_one_in_compare(trained):
    html, before, seconds = report_beside_compare(trained.url)
    report = parse_report(html)
    assert len(report.figures) > 100
    assert_figures_are_compares(report, before)
    shown = {tuple(f["path"]) for f in report.figures}
    for model in MODELS:
        for key in ("test_accuracy", "accuracy_mean", "accuracy_sd", "validation_accuracy", "warmup_ms"):
            assert ("models", model, key) in shown, (model, key)
        for keys in (("ci95", 0), ("ci95", 1), ("training", "epoch_seconds"), ("training", "ms_per_step"),
                     ("serving", "latency_ms", "p50"), ("serving", "latency_ms", "p99"),
                     ("serving", "throughput_rps"), ("serving", "inference_ms", "p50"), ("per_class_accuracy", 9)):
            assert ("models", model, *keys) in shown, (model, keys)
    for pair in before["verdict"]["pairs"]:
        assert ("verdict", "pairs", f"{pair['a']}|{pair['b']}", "p_adjusted") in shown
    assert before["verdict"]["summary"] in unescape(html)
    assert seconds < 5, f"a report of an unchanged state took {seconds:.1f} s"
    print(f"GET /report: {trained.first_report_s:.1f} s until complete after the run, {seconds:.2f} s once made")


def test_the_markdown_has_the_same_headings_and_images(trained):
    html = requests.get(f"{trained.url}/report", timeout=300).text
    report = parse_report(html)
    inline = requests.get(f"{trained.url}/report.md", params={"images": "inline"}, timeout=300)
    assert inline.status_code == 200 and inline.headers["Content-Type"].startswith("text/markdown")
    assert markdown_headings(inline.text) == report.headings
    assert [level for level, _ in report.headings[:2]] == [1, 2]
    inline_images = re.findall(r"!\[[^\]]*\]\((data:image/png;base64,[A-Za-z0-9+/=]+)\)", inline.text)
    assert len(inline_images) == len(report.images)

    archive = requests.get(f"{trained.url}/report.md", timeout=300)
    assert archive.status_code == 200 and archive.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as files:
        text = files.read("report.md").decode()
        assert markdown_headings(text) == report.headings
        referenced = re.findall(r"!\[[^\]]*\]\((images/[\w.-]+\.png)\)", text)
        assert len(referenced) == len(report.images)
        assert set(files.namelist()) == {"report.md", *referenced}
        for name in referenced:
            assert files.read(name).startswith(b"\x89PNG\r\n\x1a\n"), name
    refused = requests.get(f"{trained.url}/report.md", params={"images": "links"}, timeout=30)
    assert refused.status_code == 400 and "'images' must be" in refused.json()["error"]
    operation = requests.get(f"{trained.url}/openapi.json", timeout=30).json()["paths"]["/report.md"]["get"]
    images = {parameter["name"]: parameter for parameter in operation["parameters"]}["images"]
    assert images["schema"]["enum"] == ["files", "inline"] and "400" in operation["responses"]


def test_the_code_sections_are_the_services_own_source(trained):
    report = parse_report(requests.get(f"{trained.url}/report", timeout=300).text)
    for name, service in trained.services.items():
        answer = requests.get(f"{service.url}/source", timeout=30)
        models = SERVICES[name][1]
        if answer.status_code == 404:  # a service from before GET /source: said in words
            for model in models:
                assert (model, "network") not in report.code
            continue
        assert answer.status_code == 200, answer.text
        source = answer.json()["models"]
        for model in models:
            assert report.code[(model, "network")] == source[model]["network"]["code"]
            assert report.code[(model, "training step")] == source[model]["train_step"]["code"]


def test_scripts_compare_writes_the_report(trained, tmp_path):
    from gateway import cli

    assert cli.main(["--gateway", trained.url, "--report-only", "--report", str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert markdown_headings(markdown) == parse_report(html).headings
    for name in re.findall(r"\((images/[\w.-]+\.png)\)", markdown):
        assert (tmp_path / "report" / name).read_bytes().startswith(b"\x89PNG")


# --- reports without results: said in words, never a 500 --------------------------------------------------


def test_a_report_with_no_run_yet_and_a_service_down_says_so(tmp_path, browser):
    torch = start_service("torch", tmp_path / "models-torch")  # fresh: nothing trained
    gateway = start_gateway({"torch": torch.url, "jax": f"http://127.0.0.1:{free_port()}"}, tmp_path / "gateway")
    try:
        response = requests.get(f"{gateway.url}/report", timeout=300)
        assert response.status_code == 200
        text = " ".join(unescape(re.sub(r"<[^>]+>", " ", response.text)).split())
        assert "No training run yet" in text
        assert "Not trained yet: torch, keras-torch" in text
        assert "The jax service did not answer" in text
        assert "No benchmark yet" in text and "No model has a test accuracy yet" in text
        report = parse_report(response.text)
        assert [s for s in report.sections if s in SECTIONS] == SECTIONS
        for path in ("/report.md", "/report.md?images=inline"):
            assert requests.get(gateway.url + path, timeout=300).status_code == 200, path
        page = browser.new_page()
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{gateway.url}/report")
        page.screenshot(path=str(ARTIFACTS / "report-no-run.png"), full_page=True)
        page.close()
        assert errors == []
    finally:
        gateway.stop()
        torch.stop()


def test_a_failed_model_is_named_and_a_first_report_leaves_health_live_answering(trained, tmp_path):
    torch = trained.services["torch"]
    gateway = start_gateway({"torch": torch.url}, tmp_path / "gateway", JOB_DEADLINE_S="2")
    try:
        accepted = API.post(f"{gateway.url}/train", json={"models": ["torch"], "epochs": 3}, timeout=30)
        run = finished_run(gateway.url, accepted.json()["run_id"], timeout=120)
        assert run["status"] == "failed"
        slowest = []
        done = threading.Event()

        def probe():
            while not done.is_set():
                started = time.perf_counter()
                requests.get(f"{gateway.url}/health/live", timeout=10)
                slowest.append(time.perf_counter() - started)
                time.sleep(0.05)

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            started = time.perf_counter()
            response = requests.get(f"{gateway.url}/report", timeout=300)  # a cold gateway: everything drawn
            seconds = time.perf_counter() - started
        finally:
            done.set()
            prober.join()
        assert response.status_code == 200
        text = " ".join(unescape(re.sub(r"<[^>]+>", " ", response.text)).split())
        assert f"In the latest run ({run['run_id']}), torch failed: no result within 2 s (JOB_DEADLINE_S)" in text
        assert "No training run yet" in text  # the gateway has no successful run: the figures come from the service
        assert max(slowest) < 1.0, f"/health/live took {max(slowest):.2f} s during a first report ({seconds:.1f} s)"
        print(f"a first report on a fresh gateway: {seconds:.1f} s; /health/live at most {max(slowest) * 1000:.0f} ms")
    finally:
        gateway.stop()


def test_a_report_with_a_stopped_service_says_so(trained):
    trained.services["tf"].stop()  # last test of the module: the stack goes with it
    complete_report(trained.url, timeout=120)  # the verdict of the models still served
    html, comparison, _ = report_beside_compare(trained.url)
    text = " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())
    assert "The tf service did not answer" in text
    report = parse_report(html)
    assert ["models", "tf-native", "test_accuracy"] in [f["path"] for f in report.figures]  # from the stored run
    assert_figures_are_compares(report, comparison)
    markdown = requests.get(f"{trained.url}/report.md", params={"images": "inline"}, timeout=300)
    assert markdown.status_code == 200 and "The tf service did not answer" in markdown.text
