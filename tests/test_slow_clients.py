"""Slow clients cannot stall the gateway: 64 half-sent requests are held open while /health keeps answering.

The half-sent requests are of both kinds a slowloris attack uses: headers that never end, and a body that
never arrives. A gateway whose worker threads each waited on one of them would stop answering.
"""

from __future__ import annotations

import socket
import time

import pytest
import requests

from servekit.testing import free_port

HALF_OPEN = 64


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, gateway_factory):
    process = gateway_factory({"torch": f"http://127.0.0.1:{free_port()}"}, tmp_path_factory.mktemp("slow"))
    yield process
    process.stop()


def half_sent(port: int, kind: str) -> socket.socket:
    """A connection that sent part of a request and then nothing more."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if kind == "headers":
        sock.sendall(b"POST /train HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n")
    else:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n{\"pixels\": [")
    return sock


def test_health_answers_within_a_second_while_64_requests_hang(gateway):
    sockets = [half_sent(gateway.port, "headers" if i % 2 else "body") for i in range(HALF_OPEN)]
    try:
        time.sleep(0.5)  # every half-sent request has reached the server
        slowest = 0.0
        for _ in range(20):
            started = time.perf_counter()
            response = requests.get(gateway.url + "/health", timeout=1)  # a stalled server raises here
            assert response.status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
        print(f"/health with {HALF_OPEN} half-sent requests open: slowest of 20 answers {slowest * 1000:.1f} ms")
        pixels = {"pixels": [[0.0] * 28 for _ in range(28)]}
        assert requests.post(gateway.url + "/predict", json=pixels, timeout=5).status_code == 502  # work goes on
    finally:
        for sock in sockets:
            sock.close()


def test_a_too_large_upload_gets_the_json_413(gateway):
    response = requests.post(gateway.url + "/predict", timeout=30,
                             files={"image": ("big.png", b"\0" * (11 * 1024 * 1024), "image/png")})
    assert response.status_code == 413 and "limit" in response.json()["error"]
