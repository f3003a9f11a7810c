"""`make run` (scripts/run-local): every process starts on its port, and Ctrl-C stops them all."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

from servekit.testing import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def listening_addresses(ports) -> set[str]:
    """The local addresses that listen on these ports, as `ss -ltn` shows them."""
    wanted = {str(port) for port in ports}
    lines = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout.splitlines()
    addresses = set()
    for line in lines:
        local = line.split()[3]  # State Recv-Q Send-Q Local:Port Peer:Port
        address, _, port = local.rpartition(":")
        if port in wanted:
            addresses.add(address.strip("[]"))
    return addresses


def test_run_local_starts_everything_and_ctrl_c_stops_it(tmp_path, mnist):
    ports = {name: free_port() for name in ("GATEWAY", "KERAS", "TORCH", "TF")}
    env = {**os.environ, **{f"{name}_PORT": str(port) for name, port in ports.items()},
           "MODEL_DIR_ROOT": str(tmp_path), "MNIST_DIR": str(mnist.folder)}
    log = open(tmp_path / "run-local.log", "wb")
    process = subprocess.Popen([str(ROOT / "scripts" / "run-local")], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        gateway = f"http://127.0.0.1:{ports['GATEWAY']}"
        wait_healthy(gateway + "/health", 180, process, tmp_path / "run-local.log")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            services = requests.get(gateway + "/services", timeout=10).json()["services"]
            if len(services) == 3 and all(s["up"] for s in services):
                break
            time.sleep(1)
        assert sorted(s["name"] for s in services) == ["keras", "tf", "torch"]
        assert all(s["up"] for s in services), services
        link = re.search(rf"open http://127\.0\.0\.1:{ports['GATEWAY']}/#token=(\S+) in a browser",
                         (tmp_path / "run-local.log").read_text())
        assert link and link.group(1) == (tmp_path / "gateway" / "api_token").read_text()
        # The gateway reaches the services with the run's service token: the service says "not trained",
        # not 401/403.
        refused = requests.post(gateway + "/evaluate", json={"models": ["torch"], "limit": 10}, timeout=60,
                                headers={"Authorization": f"Bearer {link.group(1)}"})
        assert refused.status_code == 200 and "not trained" in refused.json()["results"][0]["error"]
        assert listening_addresses(ports.values()) == {"127.0.0.1"}  # nothing on the LAN
    finally:
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends to the foreground group
        process.wait(timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(port_open(port) for port in ports.values()):
        time.sleep(0.5)
    assert not [name for name, port in ports.items() if port_open(port)], "a process still listens after Ctrl-C"
