"""Defences over real HTTP: Host allow-list, cross-site writes, JSON-only POSTs, headers, rate and work limits.

Gateways (most checks need no service to answer) and a torch service, each under gunicorn on loopback.
"""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest
import requests

from servekit.testing import authorized, free_port, png_bytes

API = authorized()  # state-changing calls carry the token of the processes the tests start

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, gateway_factory):
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens: these checks come first
    process = gateway_factory({"torch": nowhere}, tmp_path_factory.mktemp("gateway-security"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def open_gateway(tmp_path_factory, gateway_factory):
    process = gateway_factory({"torch": f"http://127.0.0.1:{free_port()}"},
                              tmp_path_factory.mktemp("gateway-any-host"), ALLOWED_HOSTS="*")
    yield process
    process.stop()


def test_every_response_carries_the_security_headers(gateway):
    for response in (requests.get(gateway.url + "/", timeout=10), requests.get(gateway.url + "/runs/nope", timeout=10)):
        for name, value in SECURITY_HEADERS.items():
            assert response.headers[name] == value
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy


def test_a_foreign_host_header_is_refused_but_probes_answer(gateway, open_gateway):
    rebound = {"Host": f"attacker.example:{gateway.port}"}
    response = requests.get(gateway.url + "/services", headers=rebound, timeout=10)
    assert response.status_code == 400 and "ALLOWED_HOSTS" in response.json()["error"]
    assert API.post(gateway.url + "/train", json={}, headers=rebound, timeout=10).status_code == 400
    assert requests.get(gateway.url + "/health", headers=rebound, timeout=10).status_code == 200
    for host in (f"localhost:{gateway.port}", f"127.0.0.1:{gateway.port}"):
        assert requests.get(gateway.url + "/", headers={"Host": host}, timeout=10).status_code == 200
    assert requests.get(open_gateway.url + "/", headers=rebound, timeout=10).status_code == 200


@pytest.mark.parametrize("headers", [
    {"Origin": "http://attacker.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
])
def test_cross_site_writes_are_refused(gateway, headers):
    response = API.post(gateway.url + "/train", json={}, headers=headers, timeout=10)
    assert response.status_code == 403 and "cross-site" in response.json()["error"]


def test_same_origin_writes_pass_the_check(gateway):
    same = {"Origin": gateway.url, "Sec-Fetch-Site": "same-origin"}
    response = API.post(gateway.url + "/train", json={"models": ["torch"]}, headers=same, timeout=30)
    assert response.status_code not in (400, 403, 415), response.text  # refused later: no service answers


@pytest.mark.parametrize("kwargs", [
    {},                                                          # an empty body with no Content-Type
    {"data": "epochs=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},  # an HTML form
    {"data": "{}", "headers": {"Content-Type": "text/plain"}},   # a "simple" cross-site fetch
])
def test_a_post_must_be_json(gateway, kwargs):
    for path in ("/train", "/evaluate", "/benchmark", "/models/torch/versions/1/promote"):
        response = API.post(gateway.url + path, timeout=10, **kwargs)
        assert response.status_code == 415, (path, response.status_code, response.text)
        assert "application/json" in response.json()["error"]


def test_services_apply_the_same_rules(service_factory):
    service = service_factory("torch")
    assert API.post(service.url + "/train", timeout=10).status_code == 415
    assert API.post(service.url + "/train", json={}, headers={"Origin": "http://attacker.example"},
                         timeout=10).status_code == 403
    # The gateway reaches replicas by address: any Host is fine on a service unless ALLOWED_HOSTS says.
    assert requests.get(service.url + "/models", headers={"Host": "10.0.0.7:8002"}, timeout=10).status_code == 200
    # Uploads and untyped Open Inference Protocol bodies (tritonclient sends no Content-Type) still work.
    one = np.full((28, 28), 255, np.uint8)
    one[5:23, 12:16] = 0  # a "1", black on white
    digit = png_bytes(one)
    upload = API.post(service.url + "/predict", files={"image": ("d.png", digit, "image/png")}, timeout=10)
    raw = API.post(service.url + "/predict", data=digit, headers={"Content-Type": "image/png"}, timeout=10)
    assert upload.status_code == raw.status_code == 503  # read, then refused only because nothing is trained
    infer = API.post(service.url + "/v2/models/torch/infer", data=b"{}", timeout=10)
    assert infer.status_code == 400 and "inputs" in infer.json()["error"]


def test_predictions_are_rate_limited_per_client_when_asked(tmp_path, gateway_factory):
    limited = gateway_factory({"torch": f"http://127.0.0.1:{free_port()}"}, tmp_path, RATE_LIMIT="3/minute")
    try:
        pixels = {"pixels": [[0.0] * 28 for _ in range(28)]}
        statuses = [API.post(limited.url + "/predict", json=pixels, timeout=10) for _ in range(4)]
        assert [r.status_code for r in statuses[:3]] == [502, 502, 502]  # counted, though no service answered
        refused = statuses[3]
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        assert "too many requests" in refused.json()["error"]
        assert requests.get(limited.url + "/health", timeout=10).status_code == 200  # only predictions
    finally:
        limited.stop()


def test_one_benchmark_at_a_time(tmp_path, service_factory, gateway_factory):
    service = service_factory("torch")  # untrained: every request is a quick 503, the run lasts max_seconds
    gateway = gateway_factory({"torch": service.url}, tmp_path / "gateway")
    try:
        body = {"requests": 5000, "concurrency": 2, "max_seconds": 4}
        first = {}
        running = threading.Thread(target=lambda: first.update(
            response=authorized().post(gateway.url + "/benchmark", json=body, timeout=60)))
        running.start()
        time.sleep(1.5)
        second = API.post(gateway.url + "/benchmark", json=body, timeout=60)
        running.join()
        assert second.status_code == 409 and "already running" in second.json()["error"]
        assert first["response"].status_code == 200
        assert API.post(gateway.url + "/benchmark", json={**body, "max_seconds": 1},
                             timeout=60).status_code == 200  # free again
    finally:
        gateway.stop()


# --- tokens --------------------------------------------------------------------------------------------------


def test_writes_need_the_token_and_reads_and_predictions_stay_open(gateway):
    missing = requests.post(gateway.url + "/train", json={}, timeout=10)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert "token" in missing.json()["error"]
    for path in ("/train", "/evaluate", "/benchmark", "/models/torch/versions/1/promote"):
        wrong = requests.post(gateway.url + path, json={}, headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 403, path
        assert requests.post(gateway.url + path, json={}, timeout=10).status_code == 401, path
    assert requests.get(gateway.url + "/services", timeout=10).status_code == 200
    pixels = {"pixels": [[0.0] * 28 for _ in range(28)]}
    assert requests.post(gateway.url + "/predict", json=pixels, timeout=10).status_code == 502  # open; nothing up


def test_protect_predict_and_auth_off(tmp_path, gateway_factory):
    nowhere = {"torch": f"http://127.0.0.1:{free_port()}"}
    pixels = {"pixels": [[0.0] * 28 for _ in range(28)]}
    protected = gateway_factory(nowhere, tmp_path / "protected", PROTECT_PREDICT="1")
    off = gateway_factory(nowhere, tmp_path / "off", AUTH="off", API_TOKEN="")
    try:
        assert requests.post(protected.url + "/predict", json=pixels, timeout=10).status_code == 401
        assert API.post(protected.url + "/predict", json=pixels, timeout=10).status_code == 502
        assert requests.post(off.url + "/train", json={"models": ["torch"]}, timeout=10).status_code not in (401, 403)
        assert "AUTH=off" in off.log_tail()
    finally:
        protected.stop()
        off.stop()


def test_a_generated_token_is_printed_with_the_page_url_and_survives_a_restart(tmp_path, gateway_factory):
    gateway = gateway_factory({"torch": f"http://127.0.0.1:{free_port()}"}, tmp_path, API_TOKEN="")
    try:
        printed = re.search(r"open (http://\S+)/#token=(\S+) in a browser", gateway.log_tail())
        assert printed and printed.group(1) == f"http://127.0.0.1:{gateway.port}", gateway.log_tail()
        token = printed.group(2)
        assert (tmp_path / "api_token").read_text() == token
        assert oct((tmp_path / "api_token").stat().st_mode & 0o777) == "0o600"
        accepted = requests.post(gateway.url + "/train", json={"models": ["nope"]}, timeout=10,
                                 headers={"Authorization": f"Bearer {token}"})
        assert accepted.status_code == 404  # past the token check
        gateway.stop()
        gateway.start()
        assert f"#token={token} " in gateway.log_tail(5)  # the same link still works after a restart
    finally:
        gateway.stop()


def test_a_token_file_and_the_service_token_the_gateway_sends(tmp_path, service_factory, gateway_factory):
    secret = tmp_path / "service_token"
    secret.write_text("from-a-secret-file\n")
    service = service_factory("torch", API_TOKEN="", API_TOKEN_FILE=str(secret))
    assert API.post(service.url + "/evaluate", json={}, timeout=10).status_code == 403
    direct = requests.post(service.url + "/evaluate", json={}, timeout=10,
                           headers={"Authorization": "Bearer from-a-secret-file"})
    assert direct.status_code == 503  # past the token check: nothing is trained
    right = gateway_factory({"torch": service.url}, tmp_path / "right", SERVICE_TOKEN_FILE=str(secret),
                            SERVICE_TOKEN="")
    wrong = gateway_factory({"torch": service.url}, tmp_path / "wrong", SERVICE_TOKEN="not-it")
    try:
        assert "not trained" in API.post(right.url + "/evaluate", json={}, timeout=30).json()["results"][0]["error"]
        assert "not valid" in API.post(wrong.url + "/evaluate", json={}, timeout=30).json()["results"][0]["error"]
    finally:
        right.stop()
        wrong.stop()


def test_behind_a_trusted_proxy_the_rate_is_per_forwarded_client(tmp_path, gateway_factory):
    proxied = gateway_factory({"torch": f"http://127.0.0.1:{free_port()}"}, tmp_path, RATE_LIMIT="2/minute",
                              GATEWAY_TRUSTED_PROXY="127.0.0.1")
    try:
        pixels = {"pixels": [[0.0] * 28 for _ in range(28)]}

        def predict(client):
            return requests.post(proxied.url + "/predict", json=pixels, headers={"X-Forwarded-For": client},
                                 timeout=10).status_code

        assert [predict("203.0.113.7") for _ in range(3)] == [502, 502, 429]
        assert predict("198.51.100.2") == 502  # another client behind the same proxy has its own limit
    finally:
        proxied.stop()


def test_the_gateways_liveness_asks_no_service(tmp_path, gateway_factory):
    slow = gateway_factory({"torch": "http://10.255.255.1:8002"}, tmp_path)  # unroutable: connects hang
    try:
        started = time.perf_counter()
        assert requests.get(slow.url + "/health/live", timeout=5).json() == {"status": "ok"}
        assert time.perf_counter() - started < 1.0  # /health would wait for the service's connect timeout
        assert requests.get(slow.url + "/health/live", headers={"Host": "10.1.2.3:8000"}, timeout=5).ok  # probes
    finally:
        slow.stop()


def test_every_model_means_every_service_has_answered(tmp_path, gateway_factory):
    down = gateway_factory({"torch": f"http://127.0.0.1:{free_port()}"}, tmp_path)
    try:
        for path in ("/train", "/evaluate"):
            response = API.post(down.url + path, json={}, timeout=30)
            assert response.status_code == 503 and "torch has not answered" in response.json()["error"], path
    finally:
        down.stop()
