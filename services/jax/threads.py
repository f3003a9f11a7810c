"""Thread parity for XLA on the CPU, which has no thread-count setting: it sizes its pool from the CPUs the
process may run on. So the service restricts its CPU affinity to ``INTRA_OP_THREADS`` of the CPUs it is allowed
(before JAX starts), and says so in /health. The workers of a multi-worker server each take their own CPUs (by
their gunicorn worker index), as the other frameworks' threads spread over the machine."""

from __future__ import annotations

import os

from servekit.settings import worker_index


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
