"""What gunicorn runs each role with: the worker count, and OpenMP's wait policy (servers sleep, trainers spin)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SHOW = ("import json, os, servekit.gunicorn_settings as s; "
        "print(json.dumps({'omp': os.environ.get('OMP_WAIT_POLICY'), 'workers': s.workers, 'threads': s.threads}))")


def settings_for(**env: str) -> dict:
    """servekit.gunicorn_settings as a fresh process with ``env`` sees it (it sets the environment on import)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "ROLE", "SERVER_WORKERS")}
    result = subprocess.run([sys.executable, "-c", SHOW], env={**clean, **env}, capture_output=True, text=True,
                            timeout=60, check=True)
    return json.loads(result.stdout)


@pytest.mark.parametrize(("role", "policy", "workers"), [("server", "PASSIVE", 3), ("all", "PASSIVE", 1),
                                                         ("trainer", None, 1)])
def test_servers_sleep_between_parallel_regions_and_trainers_spin(role, policy, workers):
    seen = settings_for(ROLE=role, SERVER_WORKERS="3")
    assert seen["omp"] == policy
    assert seen["workers"] == workers  # a trainer's job lives in its one process


def test_an_explicit_wait_policy_is_kept():
    assert settings_for(ROLE="server", OMP_WAIT_POLICY="ACTIVE")["omp"] == "ACTIVE"


WORKER_APP = '''import os


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{os.getpid()} {os.environ['GUNICORN_WORKER_INDEX']}".encode()]
'''


def test_each_worker_gets_its_own_index_and_a_replacement_takes_its_predecessors(tmp_path):
    """A real gunicorn with servekit's settings and two workers: indexes 0 and 1; a killed worker's replacement
    takes the index it left (what the jax service picks its CPUs by)."""
    import signal
    import socket
    import time

    import requests

    (tmp_path / "indexapp.py").write_text(WORKER_APP)
    (tmp_path / "conf.py").write_text("from servekit.gunicorn_settings import *  # noqa: F403\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ROLE": "server", "SERVER_WORKERS": "2", "PORT": str(port), "GUNICORN_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "conf.py", "indexapp:app"], cwd=tmp_path,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def indexes_by_pid(expect: int) -> dict[int, int]:
        seen: dict[int, int] = {}
        deadline = time.monotonic() + 60
        while len(seen) < expect and time.monotonic() < deadline:
            try:  # a new connection each time: SO_REUSEPORT spreads them over the workers
                pid, index = requests.get(f"http://127.0.0.1:{port}/", timeout=5).text.split()
                seen[int(pid)] = int(index)
            except requests.ConnectionError:
                time.sleep(0.2)
        return seen

    try:
        first = indexes_by_pid(2)
        assert sorted(first.values()) == [0, 1]
        victim = next(pid for pid, index in first.items() if index == 1)
        os.kill(victim, signal.SIGKILL)
        time.sleep(1)
        after = indexes_by_pid(2)
        replacement = {pid: index for pid, index in after.items() if pid not in first}
        assert list(replacement.values()) == [1], after
    finally:
        server.terminate()
        server.wait(timeout=30)
