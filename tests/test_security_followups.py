"""Issue 24's follow-ups over real HTTP: hostile weight archives on a service's /parity, the token the gateway
logs, and a burst of large uploads on the gateway's /predict.

Each runs real servers on loopback (a torch service under gunicorn, gateways under waitress).
"""

from __future__ import annotations

import base64
import io
import threading
import time
import zipfile

import numpy as np
import psutil
import pytest
import requests

from servekit.testing import authorized, free_port, wait_for_job
from servekit.weights import MAX_ARCHIVE_BYTES, SHAPES

API = authorized()  # state-changing calls carry the token of the processes the tests start
BOMB_BYTES = 512 * 1024 * 1024  # what one bomb member would expand to
MEMORY_BOUND = 64 * 1024 * 1024  # a refused archive may cost the service this much at most (the old code: GBs)


def npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    """A .npy format 1.0 header claiming ``shape`` of ``descr``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def archive(members: dict[str, bytes], zeros: int = 0) -> bytes:
    """A deflated zip of ``members``, each followed by ``zeros`` zero bytes (as they compress, ~1,000:1)."""
    buffer, chunk = io.BytesIO(), bytes(1024 * 1024)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        for name, content in members.items():
            with out.open(name, "w") as member:
                member.write(content)
                for _ in range(zeros // len(chunk)):
                    member.write(chunk)
    return buffer.getvalue()


def honest_members() -> dict[str, bytes]:
    """Each layer as np.save writes it (zeros of the right shape and dtype)."""
    members = {}
    for name, shape in SHAPES.items():
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(shape, np.float32))
        members[f"{name}.npy"] = buffer.getvalue()
    return members


def tree_rss(pid: int) -> int:
    """The resident memory of a process and its children (gunicorn's master and workers)."""
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


class PeakRss:
    """Samples a process tree's resident memory every 10 ms while the ``with`` block runs."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()

    def __enter__(self) -> PeakRss:
        self.before = self.peak = tree_rss(self.pid)
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.pid))

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            time.sleep(0.01)


@pytest.fixture(scope="module")
def torch_service(tmp_path_factory, role_factory):
    """A torch service (ROLE=all), its torch model trained for one epoch on 1,000 images."""
    service = role_factory("torch", tmp_path_factory.mktemp("security") / "repository", "all")
    try:
        accepted = API.post(service.url + "/train", timeout=30,
                            json={"model": "torch", "epochs": 1, "train_limit": 1000})
        assert accepted.status_code == 202, accepted.text
        assert wait_for_job(service.url + accepted.json()["status_url"], timeout=600)["status"] == "succeeded"
        yield service
    finally:
        service.stop()


def parity(service, data: bytes, **extra) -> requests.Response:
    """POST /parity with ``data`` as the base64 archive."""
    return API.post(service.url + "/parity", json={"weights": base64.b64encode(data).decode(), **extra},
                    timeout=120)


def test_zip_bombs_are_refused_at_once_with_bounded_memory(torch_service):
    bomb = archive({"conv1/kernel.npy": npy_header((BOMB_BYTES // 4,))}, zeros=BOMB_BYTES)
    assert len(bomb) < MAX_ARCHIVE_BYTES  # small enough to be read: the zip directory is what refuses it
    answers = []
    with PeakRss(torch_service.process.pid) as memory:
        started = time.monotonic()
        threads = [threading.Thread(target=lambda: answers.append(parity(torch_service, bomb, limit=10)))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {400, 429} and 400 in statuses, statuses  # 429: one transplant (and decode) at a time
    for answer in answers:
        expected = "conv1/kernel.npy expands to 536,871,040 bytes; conv1/kernel takes at most 5,248"
        assert expected in answer.text if answer.status_code == 400 else "Retry-After" in answer.headers
    assert elapsed < 10, elapsed  # the old code: 5.6 s for one, and GBs
    assert memory.peak - memory.before < MEMORY_BOUND, (memory.before, memory.peak)


def test_an_archive_over_the_size_limit_is_refused_before_it_is_decoded(torch_service):
    answer = parity(torch_service, bytes(MAX_ARCHIVE_BYTES + 1024), limit=10)
    assert answer.status_code == 400 and "characters of base64" in answer.json()["error"], answer.text


def test_a_header_claiming_a_huge_array_is_a_400_not_a_500(torch_service):
    members = honest_members()
    members["conv1/kernel.npy"] = npy_header((10**6, 10**6), "<f8")
    with PeakRss(torch_service.process.pid) as memory:
        answer = parity(torch_service, archive(members), limit=10)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == ("conv1/kernel.npy holds float64 of shape [1000000, 1000000]; conv1/kernel "
                                      "must be float32 (little-endian) of shape [3, 3, 1, 32]")
    assert memory.peak - memory.before < MEMORY_BOUND


@pytest.mark.parametrize(("members", "expected"), [
    ({"conv1/kernel.npy": b""}, "lacks conv1/bias.npy"),
    ({**{f"x{i}.npy": b"" for i in range(7)}}, "has 7 members; it must hold exactly 6"),
    ({"../../etc/passwd": b""}, "holds '../../etc/passwd'"),
])
def test_malformed_archives_are_a_400_with_the_reason(torch_service, members, expected):
    answer = parity(torch_service, archive(members), limit=10)
    assert answer.status_code == 400 and expected in answer.json()["error"], answer.text


def test_an_export_of_a_trained_model_still_round_trips(torch_service, digits):
    exported = requests.get(torch_service.url + "/models/torch/weights", timeout=30)
    assert exported.status_code == 200, exported.text
    answer = API.post(torch_service.url + "/parity", json={"weights": exported.json()["npz"], "limit": 20},
                      timeout=300)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["model"] for r in body["results"]] == ["torch", "keras-torch"]
    assert body["labels"] == digits[1].tolist()
    pixels = (digits[0] / 255.0).astype("<f4").tobytes()
    served = requests.post(torch_service.url + "/predict?model=torch", data=pixels, timeout=30,
                           headers={"Content-Type": "application/x-mnist-float32"})
    assert served.status_code == 200, served.text
    expected = np.array([p["probabilities"] for p in served.json()["predictions"]])
    for result in body["results"]:  # the transplants answer as the served model does (6 decimals)
        probabilities = np.frombuffer(base64.b64decode(result["probabilities"]), "<f4").reshape(20, 10)
        assert np.abs(probabilities - expected).max() < 1e-4, result["model"]


# The token in the gateway's log: only one the gateway generated is printed.

@pytest.mark.parametrize("source", ["API_TOKEN", "API_TOKEN_FILE"])
def test_an_operator_supplied_token_never_reaches_the_gateway_log(tmp_path, gateway_factory, source):
    token, service_token = f"operator-secret-{source.lower()}-7c1e", "service-secret-93ab"
    secret = tmp_path / "api_token_secret"
    secret.write_text(token + "\n")
    env = {"API_TOKEN": token} if source == "API_TOKEN" else {"API_TOKEN": "", "API_TOKEN_FILE": str(secret)}
    gateway = gateway_factory({"torch": f"http://127.0.0.1:{free_port()}"}, tmp_path / "gateway",
                              SERVICE_TOKEN=service_token, **env)
    try:
        accepted = requests.post(gateway.url + "/train", json={"models": ["nope"]}, timeout=10,
                                 headers={"Authorization": f"Bearer {token}"})
        assert accepted.status_code == 404, accepted.text  # the token works: past its check
        refused = requests.post(gateway.url + "/train", json={}, timeout=10,
                                headers={"Authorization": f"Bearer {token}x"})
        assert refused.status_code == 403
    finally:
        gateway.stop()
    log = gateway.log_path.read_text()  # stdout and stderr
    assert f"open http://127.0.0.1:{gateway.port}/#token=<token> in a browser" in log, log
    where = "API_TOKEN" if source == "API_TOKEN" else f"API_TOKEN_FILE ({secret})"
    assert f"<token> being the one {where} holds" in log, log
    assert token not in log and service_token not in log, log
    assert not (tmp_path / "gateway" / "api_token").exists()  # nothing generated, nothing stored


def test_a_generated_token_is_still_printed_in_the_page_link(tmp_path, gateway_factory):
    gateway = gateway_factory({"torch": f"http://127.0.0.1:{free_port()}"}, tmp_path, API_TOKEN="")
    gateway.stop()
    token = (tmp_path / "api_token").read_text()
    assert f"open http://127.0.0.1:{gateway.port}/#token={token} in a browser" in gateway.log_path.read_text()


# A burst of large uploads on the gateway: refused beyond a few decode slots and a short queue, not queued.

BURST = 24


@pytest.fixture(scope="module")
def large_png() -> bytes:
    """A 40-megapixel PNG (the most accepted) of a stroke on white paper: ~0.2 MB, 40 MB once decoded."""
    from PIL import Image, ImageDraw

    width, height = 6400, 6250
    image = Image.new("L", (width, height), 255)
    ImageDraw.Draw(image).line([(width // 2, height // 4), (width // 2, 3 * height // 4)], fill=0, width=300)
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def test_a_burst_of_large_uploads_gets_429s_while_the_gateway_stays_live(tmp_path, gateway_factory,
                                                                        torch_service, large_png):
    gateway = gateway_factory({"torch": torch_service.url}, tmp_path)
    answers, live_seconds, burst_over = [], [], threading.Event()

    def upload() -> None:
        answers.append(requests.post(gateway.url + "/predict", timeout=60,
                                     files={"image": ("large.png", large_png, "image/png")}))

    def probe_liveness() -> None:
        while not burst_over.is_set():
            started = time.monotonic()
            assert requests.get(gateway.url + "/health/live", timeout=30).status_code == 200
            live_seconds.append(time.monotonic() - started)
            time.sleep(0.02)

    try:
        prober = threading.Thread(target=probe_liveness)
        prober.start()
        uploads = [threading.Thread(target=upload) for _ in range(BURST)]
        for thread in uploads:
            thread.start()
        for thread in uploads:
            thread.join()
        burst_over.set()
        prober.join()
        statuses = [answer.status_code for answer in answers]
        assert len(statuses) == BURST and set(statuses) <= {200, 429}, statuses  # never a 500
        assert 200 in statuses and 429 in statuses, statuses
        for answer in answers:
            if answer.status_code == 429:
                assert int(answer.headers["Retry-After"]) >= 1
                assert "large image decodes are already running" in answer.json()["error"]
            else:
                assert any(p.get("model") == "torch" and "label" in p for p in answer.json()["predictions"])
        assert live_seconds and max(live_seconds) < 1.0, live_seconds  # it took 2.4-3.7 s before
        again = requests.post(gateway.url + "/predict", files={"image": ("large.png", large_png, "image/png")},
                              timeout=60)
        assert again.status_code == 200, again.text  # the slots are free again after the burst
    finally:
        burst_over.set()
        gateway.stop()
