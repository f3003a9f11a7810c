"""Thread parity for XLA on the CPU, which has no thread-count setting: it sizes its pool from the CPUs the
process may run on. So the service restricts its CPU affinity to ``INTRA_OP_THREADS`` of the CPUs it is allowed
(before JAX starts), and says so in /health. The workers of a multi-worker server each take their own CPUs (by
their gunicorn worker index), as the other frameworks' threads spread over the machine. ``before_jax_starts`` does
that and, in a process that trains, has XLA's threads share glibc's main heap (servekit.memory.one_malloc_arena)."""

from __future__ import annotations

import os

from servekit.memory import one_malloc_arena
from servekit.settings import Settings, worker_index


def cpus_for_worker(allowed: list[int], intra_op_threads: int, index: int) -> list[int]:
    """The ``intra_op_threads`` CPUs of ``allowed`` for worker ``index``: consecutive slices, worker 0 the
    first, wrapping round when there are more workers than slices."""
    slices = max(1, len(allowed) // intra_op_threads)
    start = (index % slices) * intra_op_threads
    return allowed[start:start + intra_op_threads]


def limit_xla_threads(intra_op_threads: int) -> dict:
    """Run on ``intra_op_threads`` CPUs (when fewer than allowed); /health's ``threads`` entry saying how."""
    allowed = sorted(os.sched_getaffinity(0))
    if intra_op_threads < len(allowed):
        index = worker_index()
        cpus = cpus_for_worker(allowed, intra_op_threads, index)
        os.sched_setaffinity(0, cpus)
        how = (f"CPU affinity set to CPU(s) {','.join(map(str, cpus))} of the {len(allowed)} allowed (gunicorn "
               f"worker {index}; XLA sizes its pool from it)")
    else:
        how = f"all {len(allowed)} allowed CPUs (XLA sizes its pool from the CPU affinity)"
    if intra_op_threads == 1:  # one thread: no Eigen pool either
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen=false".strip()
    return {"intra_op": min(intra_op_threads, len(allowed)), "how": how,
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def before_jax_starts(settings: Settings) -> dict:
    """What app.py (and scripts/bench_training.py) set before JAX starts its runtime and threads: the CPUs
    (``limit_xla_threads``) and, where the process trains, one malloc arena (keras-jax's epoch 40% shorter; a
    server keeps an arena per thread: one cost it 5-10% of its requests per second in an A/B run of scripts/bench).
    /health's ``threads`` entry, with ``malloc_arena_max`` (None: glibc's default)."""
    threads = limit_xla_threads(settings.intra_op_threads)
    threads["malloc_arena_max"] = 1 if settings.trains and one_malloc_arena() else None
    return threads
