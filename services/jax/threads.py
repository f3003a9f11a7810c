"""Thread parity for XLA on the CPU, which has no thread-count setting: it sizes its pool from the CPUs the
process may run on. So the service restricts its CPU affinity to ``INTRA_OP_THREADS`` of the CPUs it is allowed
(before JAX starts), and says so in /health."""

from __future__ import annotations

import os


def limit_xla_threads(intra_op_threads: int) -> dict:
    """Run on ``intra_op_threads`` CPUs (when fewer than allowed); /health's ``threads`` entry saying how."""
    allowed = sorted(os.sched_getaffinity(0))
    if intra_op_threads < len(allowed):
        os.sched_setaffinity(0, allowed[:intra_op_threads])
        how = f"CPU affinity set to {intra_op_threads} of the {len(allowed)} allowed CPUs (XLA sizes its pool from it)"
    else:
        how = f"all {len(allowed)} allowed CPUs (XLA sizes its pool from the CPU affinity)"
    if intra_op_threads == 1:  # one thread: no Eigen pool either
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen=false".strip()
    return {"intra_op": min(intra_op_threads, len(allowed)), "how": how,
            "xla_flags": os.environ.get("XLA_FLAGS", "")}
