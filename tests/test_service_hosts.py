"""The Host names a framework service answers to, over real HTTP (against DNS rebinding, issue 24 item 6).

By default: the localhost names, any IP address (the gateway calls every replica by address), and the names
compose, Swarm and Kubernetes reach the service by; a foreign name is a 400 with a JSON error, health probes
excepted. ALLOWED_HOSTS adds names (``*``: any), SERVICE_NAME replaces the service's own name.
"""

from __future__ import annotations

import socket

import pytest
import requests

from servekit.testing import authorized

API = authorized()
FOREIGN = ["evil.example", "torch.evil.example", "127.0.0.1.nip.io", "torch.a.b.svc", "keras", "localhost.",
           "tasks.keras", "svc.cluster.local"]
OWN = ["localhost", "127.0.0.1", "[::1]", "10.0.0.7", "[fd00::7]", "torch", "torch-trainer", "tasks.torch",
       "tasks.torch-trainer", "torch.mnistcmp.svc", "torch-trainer.mnistcmp.svc.cluster.local",
       socket.gethostname()]


def get(service, path: str, host: str) -> requests.Response:
    return requests.get(service.url + path, headers={"Host": host}, timeout=30)


@pytest.fixture(scope="module")
def torch_service(tmp_path_factory, role_factory):
    """A torch service (ROLE=all, nothing trained) with one more name in ALLOWED_HOSTS."""
    service = role_factory("torch", tmp_path_factory.mktemp("hosts") / "repository", "all",
                           ALLOWED_HOSTS="ml.example.org")
    yield service
    service.stop()


@pytest.mark.parametrize("name", FOREIGN)
def test_a_foreign_host_is_a_400_with_a_json_error(torch_service, name):
    for path in ("/models", "/models/torch/weights", "/metrics", "/openapi.json"):
        response = get(torch_service, path, f"{name}:{torch_service.port}")
        assert response.status_code == 400, (path, response.status_code)
        assert response.headers["Content-Type"] == "application/json"
        assert repr(name.lower()) in response.json()["error"] and "ALLOWED_HOSTS" in response.json()["error"]
    train = API.post(torch_service.url + "/train", json={}, headers={"Host": name}, timeout=30)
    assert train.status_code == 400  # before the job could start
    assert get(torch_service, "/health", name).status_code == 200  # probes are exempt


@pytest.mark.parametrize("name", [*OWN, "ml.example.org", "ML.Example.org"])
def test_its_own_names_and_addresses_are_answered(torch_service, name):
    for host in (name, f"{name}:{torch_service.port}", f"{name}:8002"):
        response = get(torch_service, "/models", host)
        assert response.status_code == 200, (host, response.text)
    # The rebinding target is reached too (503: nothing trained), not refused.
    assert get(torch_service, "/models/torch/weights", name).status_code == 503


def test_service_name_and_a_wildcard(tmp_path, role_factory):
    renamed = role_factory("torch", tmp_path / "renamed" / "repository", "all", SERVICE_NAME="pytorch")
    try:
        for name in ("pytorch", "pytorch-trainer", "tasks.pytorch", "pytorch.ml.svc", "127.0.0.1"):
            assert get(renamed, "/models", name).status_code == 200, name
        for name in ("torch", "torch-trainer", "evil.example"):
            assert get(renamed, "/models", name).status_code == 400, name
    finally:
        renamed.stop()
    open_service = role_factory("torch", tmp_path / "open" / "repository", "all", ALLOWED_HOSTS="*")
    try:
        assert get(open_service, "/models", "evil.example").status_code == 200
    finally:
        open_service.stop()
