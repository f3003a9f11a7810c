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
