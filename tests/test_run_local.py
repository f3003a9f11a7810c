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
from tests.conftest import SERVICES
from tests.stopping import (
    STOP_LIMIT_S,
    PredictionStream,
    process_tree,
    seconds_until_gone,
    stored_run,
    versions_on_disk,
    wait_for_training,
)

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


def start_run_local(tmp_path: Path, mnist) -> tuple[subprocess.Popen, dict[str, int]]:
    """scripts/run-local in a session of its own (a terminal's foreground group), every service up."""
    ports = {name: free_port() for name in ("GATEWAY", *(service.upper() for service in SERVICES))}
    env = {**os.environ, **{f"{name}_PORT": str(port) for name, port in ports.items()},
           "MODEL_DIR_ROOT": str(tmp_path), "MNIST_DIR": str(mnist.folder)}
    env.pop("API_TOKEN", None)
    log = open(tmp_path / "run-local.log", "ab")
    process = subprocess.Popen([str(ROOT / "scripts" / "run-local")], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    gateway = f"http://127.0.0.1:{ports['GATEWAY']}"
    wait_healthy(gateway + "/health", 180, process, tmp_path / "run-local.log")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        services = requests.get(gateway + "/services", timeout=10).json()["services"]
        if len(services) == len(SERVICES) and all(s["up"] for s in services):
            break
        time.sleep(1)
    assert sorted(s["name"] for s in services) == sorted(SERVICES)
    assert all(s["up"] for s in services), services
    return process, ports


def test_run_local_starts_everything_and_ctrl_c_always_stops_it(tmp_path, mnist):
    """Five starts in a row; each time Ctrl-C (SIGINT to the group) with a training running and predictions
    arriving stops every process within 5 s, the run is recorded as cancelled and no version is written."""
    stop_seconds = []
    for round_ in range(5):
        root = tmp_path / f"round-{round_}"
        root.mkdir()
        process, ports = start_run_local(root, mnist)
        try:
            gateway = f"http://127.0.0.1:{ports['GATEWAY']}"
            token = (root / "gateway" / "api_token").read_text()
            if round_ == 0:
                link = re.search(rf"open http://127\.0\.0\.1:{ports['GATEWAY']}/#token=(\S+) in a browser",
                                 (root / "run-local.log").read_text())
                assert link and link.group(1) == token
                # The gateway reaches the services with the run's service token: the service says "not
                # trained", not 401/403.
                refused = requests.post(gateway + "/evaluate", json={"models": ["torch"], "limit": 10}, timeout=60,
                                        headers={"Authorization": f"Bearer {token}"})
                assert refused.status_code == 200 and "not trained" in refused.json()["results"][0]["error"]
                assert listening_addresses(ports.values()) == {"127.0.0.1"}  # nothing on the LAN
            started = requests.post(gateway + "/train", json={"models": ["torch"], "epochs": 3, "train_limit": 20000},
                                    headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert started.status_code == 202, started.text
            run_id = started.json()["run_id"]
            with PredictionStream(gateway + "/predict") as stream:
                wait_for_training(gateway, run_id)
                tree = process_tree(process.pid)
                assert len(tree) >= 2 + 2 * len(SERVICES), tree  # run-local, gunicorn masters and workers, gateway
                answered_before = stream.answered
                time.sleep(0.5)
                assert stream.answered > answered_before  # predictions are arriving as the stop comes
                os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends to the foreground group
                seconds, left = seconds_until_gone(tree)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        assert not left, f"round {round_}: still running {seconds:.1f} s after Ctrl-C: {left}"
        assert seconds < STOP_LIMIT_S, f"round {round_}: stopping took {seconds:.1f} s"
        stop_seconds.append(round(seconds, 2))
        assert not [name for name, port in ports.items() if port_open(port)], "a process still listens after Ctrl-C"
        run = stored_run(root / "gateway", run_id)
        assert run["status"] == "cancelled" and run["models"]["torch"]["status"] == "cancelled", run
        assert versions_on_disk(root / "torch" / "torch") == []  # the cut training wrote nothing
        assert "killing it" not in (root / "run-local.log").read_text()  # nothing needed SIGKILL
    print(f"seconds from Ctrl-C until every process was gone: {stop_seconds}")
