"""The gateway's comparison answers fast, always (issue 21 item 2, issue 24 items 3-5), over real HTTP.

- The verdict is computed in the background, once per served set of (model, version): /compare answers at once
  with ``{"status": "computing"}`` until it is there, and each model's per-image answers are asked for once.
- Charts are rendered once per comparison state; first batches asked of the services once per (model, seed,
  same_start), with a bound on the requests computing them.
- Query integers are strict (no 500 for 5,000 digits, no Arabic-Indic digits); /runs refuses a bad ``limit``;
  /predict's consensus counts the answers.

Two set-ups: a stand-in service (a real HTTP server on loopback whose per-image answers wait until the test
lets them go, so the "computing" state is certain), and real torch and tf services after a small run.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import numpy as np
import pytest
import requests

from gateway.shared import SharedResults
from servekit.testing import assert_matches_openapi, authorized, png_bytes

API = authorized()
TEST_IMAGES = 10_000
LABELS = np.arange(TEST_IMAGES) % 10
WRONG = {"fake-a": range(0, 300), "fake-b": range(200, 400)}  # fake-a misses 300 digits, fake-b 200, 100 shared
HUGE = "9" * 5000  # int() refuses strings of over 4,300 digits


def timed_get(url: str, timeout: float = 60) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.get(url, timeout=timeout)
    return response, time.monotonic() - started


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:{{(.*)}})? (\S+)$", line)
        if match and all(f'{key}="{value}"' in (match.group(1) or "") for key, value in labels.items()):
            total += float(match.group(2))
    return total


# --- SharedResults: the cache behind the chart and the first batches --------------------------------------------


def test_shared_results_compute_once_for_concurrent_callers():
    results, started, release = SharedResults(4), threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(10)
        return "answer"

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(results.get, "k", slow)
        assert started.wait(10)
        others = [pool.submit(results.get, "k", lambda: "another computation") for _ in range(7)]
        assert not results.holds(["k"])  # in flight, not kept yet
        release.set()
        assert first.result(10) == "answer" and [f.result(10) for f in others] == ["answer"] * 7
    assert results.computed == 1


def test_shared_results_keep_the_most_recent_and_never_an_error():
    results = SharedResults(2)
    for key in ("a", "b", "c"):
        results.get(key, lambda key=key: key.upper())
    assert not results.holds(["a"]) and results.holds(["b", "c"])  # a was dropped first
    with pytest.raises(ZeroDivisionError):
        results.get("d", lambda: 1 / 0)
    assert results.get("d", lambda: "now") == "now"
    assert results.get("e", lambda: "partial", keep=lambda answer: answer != "partial") == "partial"
    assert not results.holds(["e"])


# --- a stand-in service ---------------------------------------------------------------------------------------


class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # 5 by default: forty connections at once would wait for SYN retransmits
    daemon_threads = True


class StandIn:
    """Two ready models; their per-image answers wait for ``release``; every /evaluate call is counted."""

    def __init__(self):
        self.release = threading.Event()
        self.evaluations: Counter[str] = Counter()
        self.server = Server(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _handler(self):
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _json(self, body, status=200):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = urlparse(self.path).path
                if path == "/models":
                    self._json({"models": [{"name": name, "ready": True, "version": 1, "params": 34_826}
                                           for name in WRONG]})
                elif path == "/health":
                    self._json({"status": "ok", "framework": "stand-in", "framework_version": "0"})
                else:
                    self._json({"error": "not here"}, 404)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                model = body["model"]
                stand_in.evaluations[model] += 1
                stand_in.release.wait(60)
                predicted = LABELS.copy()
                predicted[list(WRONG[model])] = (predicted[list(WRONG[model])] + 1) % 10
                self._json({"results": [{"model": model, "model_version": 1, "labels": LABELS.tolist(),
                                         "predicted": predicted.tolist(),
                                         "confidence": [0.9] * TEST_IMAGES}]})

            def log_message(self, *args):
                pass

        return Handler

    def stop(self):
        self.release.set()
        self.server.shutdown()


@pytest.fixture(scope="module")
def stand_in_gateway(tmp_path_factory, gateway_factory):
    stand_in = StandIn()
    gateway = gateway_factory({"stand-in": stand_in.url}, tmp_path_factory.mktemp("stand-in-gateway"))
    gateway.stand_in = stand_in
    yield gateway
    gateway.stop()
    stand_in.stop()


def test_compare_answers_computing_at_once_and_asks_for_the_answers_once(stand_in_gateway):
    gateway, stand_in = stand_in_gateway, stand_in_gateway.stand_in
    spec = requests.get(gateway.url + "/openapi.json", timeout=30).json()
    # The gateway's start began the verdict of the served set: it waits for fake-a's answers now.
    deadline = time.monotonic() + 30
    while not stand_in.evaluations["fake-a"]:
        assert time.monotonic() < deadline, "the gateway's start did not ask for the per-image answers"
        time.sleep(0.05)
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: timed_get(gateway.url + "/compare"), range(20)))
    print("GET /compare while computing, s:", sorted(round(s, 3) for _, s in answers))
    for response, seconds in answers:
        assert response.status_code == 200 and seconds < 1.0, (response.status_code, seconds)
        assert_matches_openapi(spec, "GET", "/compare", response)
        assert response.json()["verdict"] == {"status": "computing"}
    waiting = requests.get(gateway.url + "/compare/disagreements?limit=5", timeout=30)
    assert_matches_openapi(spec, "GET", "/compare/disagreements", waiting)
    assert waiting.json() == {"status": "computing", "models": [], "count": 0, "disagreements": []}

    stand_in.release.set()
    deadline = time.monotonic() + 60
    while (verdict := requests.get(gateway.url + "/compare", timeout=30).json()["verdict"])["status"] != "ready":
        assert time.monotonic() < deadline, verdict
        time.sleep(0.1)
    pair = verdict["pairs"][0]
    assert (pair["a"], pair["b"], pair["a_only"], pair["b_only"]) == ("fake-a", "fake-b", 100, 200)
    rows = {row["model"]: row for row in requests.get(gateway.url + "/compare", timeout=30).json()["models"]}
    assert rows["fake-a"]["test_correct"] == TEST_IMAGES - 300 and rows["fake-b"]["test_correct"] == TEST_IMAGES - 200
    found = requests.get(gateway.url + "/compare/disagreements?limit=5", timeout=30)
    assert_matches_openapi(spec, "GET", "/compare/disagreements", found)
    assert found.json()["status"] == "ready" and found.json()["count"] == 5
    assert stand_in.evaluations == {"fake-a": 1, "fake-b": 1}  # 20 /compare calls and more: one computation


def test_sixteen_chart_calls_render_once_and_leave_liveness_fast(stand_in_gateway):
    gateway = stand_in_gateway
    before = metric(requests.get(gateway.url + "/metrics", timeout=30).text, "chart_renders_total", format="png")
    live_seconds = []

    def probe_liveness(stop: threading.Event):
        while not stop.is_set():
            response, seconds = timed_get(gateway.url + "/health/live", timeout=30)
            assert response.status_code == 200
            live_seconds.append(seconds)

    stop = threading.Event()
    prober = threading.Thread(target=probe_liveness, args=(stop,))
    prober.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            charts = list(pool.map(lambda _: requests.get(gateway.url + "/compare/chart.png", timeout=120), range(16)))
    finally:
        stop.set()
        prober.join()
    assert all(c.status_code == 200 and c.headers["Content-Type"] == "image/png" for c in charts)
    assert len({c.content for c in charts}) == 1 and charts[0].content.startswith(b"\x89PNG")
    assert live_seconds and max(live_seconds) < 1.0, live_seconds
    after = metric(requests.get(gateway.url + "/metrics", timeout=30).text, "chart_renders_total", format="png")
    assert after - before == 1  # the comparison did not change: one render for sixteen calls
    assert requests.get(gateway.url + "/compare/chart.png", timeout=120).content == charts[0].content
    svg = requests.get(gateway.url + "/compare/chart.svg", timeout=120)
    assert svg.status_code == 200 and b"<svg" in svg.content
    text = requests.get(gateway.url + "/metrics", timeout=30).text
    assert metric(text, "chart_renders_total", format="png") == after
    assert metric(text, "chart_renders_total", format="svg") >= 1


@pytest.mark.parametrize("path", ["/runs?limit={}", "/compare/disagreements?limit={}", "/data/first-batch?seed={}"])
def test_query_integers_are_strict(stand_in_gateway, path):
    name = re.search(r"\?(\w+)=", path).group(1)
    for text in ("abc", HUGE, "١", "٣", "²", "-1", "1.5", ""):
        response = requests.get(stand_in_gateway.url + path.format(text), timeout=30)
        assert response.status_code == 400, (text[:10], response.status_code, response.text[:200])
        assert f"'{name}'" in response.json()["error"]


def test_runs_take_a_limit(stand_in_gateway):
    for text in ("1", "007", "1000"):
        response = requests.get(stand_in_gateway.url + f"/runs?limit={text}", timeout=30)
        assert response.status_code == 200 and response.json()["runs"] == []
    assert requests.get(stand_in_gateway.url + "/runs?limit=1001", timeout=30).status_code == 400
    assert requests.get(stand_in_gateway.url + "/runs?limit=0", timeout=30).status_code == 400


# --- real services after a small run ------------------------------------------------------------------------------

TRAINED = ["torch", "tf-native"]  # one model of each service: the others stay untrained (not ready)


@pytest.fixture(scope="module")
def two_services(tmp_path_factory, gateway_factory):
    from tests.conftest import start_service

    services = {name: start_service(name, tmp_path_factory.mktemp(f"background-{name}")) for name in ("torch", "tf")}
    gateway = gateway_factory({name: s.url for name, s in services.items()},
                              tmp_path_factory.mktemp("background-gateway"))
    gateway.services = services
    yield gateway
    gateway.stop()
    for service in services.values():
        service.stop()


def service_metric(service, name: str, **labels: str) -> float:
    return metric(requests.get(service.url + "/metrics", timeout=30).text, name, **labels)


def test_compare_right_after_a_run_answers_at_once_and_judges_once(two_services):
    gateway = two_services
    accepted = API.post(gateway.url + "/train", json={"models": TRAINED, "epochs": 1, "train_limit": 2000}, timeout=30)
    assert accepted.status_code == 202, accepted.text
    deadline = time.monotonic() + 600
    while (run := requests.get(gateway.url + accepted.json()["status_url"], timeout=30).json())["status"] in (
            "queued", "running"):
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    assert run["status"] == "succeeded", run

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: timed_get(gateway.url + "/compare"), range(20)))
    print("GET /compare right after the run, s:", sorted(round(s, 3) for _, s in answers))
    for response, seconds in answers:
        assert response.status_code == 200 and seconds < 1.0, (response.status_code, seconds)
        assert response.json()["verdict"]["status"] in ("computing", "ready")

    deadline = time.monotonic() + 300
    while (verdict := requests.get(gateway.url + "/compare", timeout=30).json()["verdict"])["status"] != "ready":
        assert time.monotonic() < deadline, verdict
        time.sleep(0.2)
    assert [(pair["a"], pair["b"]) for pair in verdict["pairs"]] == [("torch", "tf-native")]
    for _ in range(3):
        assert requests.get(gateway.url + "/compare", timeout=30).json()["verdict"]["status"] == "ready"
    for name, service in gateway.services.items():
        # Each service was asked for its trained model's per-image answers exactly once.
        assert service_metric(service, "http_requests_total", endpoint="/evaluate", method="POST") == 1, name
    found = requests.get(gateway.url + "/compare/disagreements?limit=10", timeout=30)
    assert found.status_code == 200 and found.json()["models"] == TRAINED and found.json()["status"] == "ready"


def test_consensus_counts_the_answers_not_the_errors(two_services, digits):
    images, _ = digits
    response = requests.post(two_services.url + "/predict", files={"image": ("d.png", png_bytes(images[0]))},
                             timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    answered = [p for p in body["predictions"] if "label" in p]
    assert sorted(p["model"] for p in answered) == sorted(TRAINED)
    assert len(body["predictions"]) == 4  # keras-torch and tf-hybrid: not trained, an error entry each
    assert body["consensus"]["of"] == 2 and 1 <= body["consensus"]["votes"] <= 2


def test_first_batches_are_asked_once_and_computations_are_bounded(two_services):
    gateway, services = two_services, two_services.services
    calls = {name: service_metric(s, "http_requests_total", endpoint="/data/first-batch") for name, s in
             services.items()}
    with ThreadPoolExecutor(16) as pool:
        same = list(pool.map(lambda _: requests.get(gateway.url + "/data/first-batch?seed=5", timeout=300),
                             range(16)))
    assert all(r.status_code == 200 for r in same), [r.status_code for r in same]
    assert len({r.content for r in same}) == 1
    assert all("error" not in b and b["image"].startswith("data:image/png;base64,") for b in same[0].json()["batches"])
    for name, service in services.items():  # each of the service's two models asked once for sixteen requests
        assert service_metric(service, "http_requests_total", endpoint="/data/first-batch") - calls[name] == 2, name
    assert requests.get(gateway.url + "/data/first-batch?seed=5", timeout=30).content == same[0].content

    calls = {name: service_metric(s, "http_requests_total", endpoint="/data/first-batch") for name, s in
             services.items()}
    with ThreadPoolExecutor(16) as pool:
        distinct = list(pool.map(lambda seed: requests.get(f"{gateway.url}/data/first-batch?seed={100 + seed}",
                                                           timeout=300), range(16)))
    refused = [r for r in distinct if r.status_code == 429]
    served = [r for r in distinct if r.status_code == 200]
    assert refused and served and len(refused) + len(served) == 16
    assert all(r.headers["Retry-After"] == "2" and "first-batch" in r.json()["error"] for r in refused)
    for name, service in services.items():  # only the requests that were served asked the services
        asked = service_metric(service, "http_requests_total", endpoint="/data/first-batch") - calls[name]
        assert asked == 2 * len(served), (name, asked, len(served))


def test_a_service_refuses_huge_and_foreign_digits_too(two_services):
    torch = two_services.services["torch"]
    foreign = requests.get(f"{torch.url}/data/first-batch?model=torch&seed=١", timeout=30)
    assert foreign.status_code == 400 and "'seed'" in foreign.json()["error"]
    # gunicorn refuses a request line of over 4,094 bytes itself (414); whoever answers, it is no 500.
    assert requests.get(f"{torch.url}/data/first-batch?model=torch&seed={HUGE}", timeout=30).status_code in (400, 414)
