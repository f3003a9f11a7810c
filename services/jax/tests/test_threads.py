"""The jax service's CPUs: XLA sizes its pool from the CPU affinity, so each worker of a server takes its own."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from threads import cpus_for_worker

SERVICE = Path(__file__).resolve().parents[1]


def test_workers_take_consecutive_slices_and_wrap_round():
    allowed = [0, 1, 2, 3]
    assert cpus_for_worker(allowed, 1, 0) == [0]
    assert cpus_for_worker(allowed, 1, 1) == [1]
    assert cpus_for_worker(allowed, 2, 1) == [2, 3]
    assert cpus_for_worker(allowed, 2, 2) == [0, 1]  # more workers than slices: they share
    assert cpus_for_worker(allowed, 3, 1) == [0, 1, 2]  # one slice of three: the remaining CPU stays unused


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
@pytest.mark.parametrize("index", [0, 1])
def test_a_one_thread_worker_runs_on_its_own_cpu(index):
    """What a two-worker server's workers do on import: worker 0 and worker 1 end on different CPUs."""
    show = ("import json, os; from threads import limit_xla_threads; t = limit_xla_threads(1); "
            "print(json.dumps({'cpus': sorted(os.sched_getaffinity(0)), **t}))")
    env = {**os.environ, "GUNICORN_WORKER_INDEX": str(index)}
    seen = json.loads(subprocess.run([sys.executable, "-c", show], cwd=SERVICE, env=env, capture_output=True,
                                     text=True, timeout=60, check=True).stdout)
    assert seen["cpus"] == [sorted(os.sched_getaffinity(0))[index]]
    assert f"worker {index}" in seen["how"]
    assert "--xla_cpu_multi_thread_eigen=false" in seen["xla_flags"]


@pytest.mark.parametrize(("role", "arena_max"), [("trainer", 1), ("all", 1), ("server", None)])
def test_a_process_that_trains_keeps_xlas_threads_on_one_malloc_arena(role, arena_max, tmp_path):
    """app.py as each role imports it: one glibc arena where it trains, the default where it only serves."""
    show = "import json, app; print(json.dumps(app.threads['malloc_arena_max']))"
    env = {**os.environ, "ROLE": role, "MODEL_REPOSITORY": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", show], cwd=SERVICE, env=env, capture_output=True, text=True,
                            timeout=300, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == arena_max
