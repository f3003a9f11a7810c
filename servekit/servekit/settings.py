"""Service configuration, read once from the environment."""

from __future__ import annotations

import os
import socket
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

from .web_security import service_hosts

ROLES = ("all", "trainer", "server")
PROMOTION_POLICIES = ("always", "if_better", "never")


@dataclass(frozen=True)
class Settings:
    """Everything a service reads from its environment (docs/api.md, "Configuration")."""

    port: int
    mnist_dir: Path
    model_repository: Path
    max_upload_bytes: int
    intra_op_threads: int
    inter_op_threads: int
    max_infer_batch: int
    role: str = "all"
    keep_versions: int = 5
    model_poll_s: float = 2.0
    workers: int = 1
    cpu_limit: int = 1
    served_by: str = ""
    service_name: str = ""  # this framework's name in compose, Swarm and Kubernetes: "torch", ...
    trainer_url: str | None = None
    allowed_hosts: Container[str] | None = None  # Host names answered (web_security.ServiceHosts); None: any
    rate_limit: str | None = None  # per client, on /predict and /v2 infer, e.g. "20/second"; None: off
    max_evaluations: int = 2  # concurrent /evaluate calls per process
    max_batch: int = 32  # dynamic batching: images per model call at most
    batch_window_ms: float = 2.0  # longest wait for more requests to join a batch; 0 turns batching off

    @property
    def trains(self) -> bool:
        return self.role in ("all", "trainer")

    @property
    def serves(self) -> bool:
        return self.role in ("all", "server")

    @classmethod
    def from_env(cls, default_port: int = 8000) -> Settings:
        """Read PORT, ROLE, MNIST_DIR, MODEL_REPOSITORY (or MODEL_DIR), KEEP_VERSIONS, MODEL_POLL_S,
        SERVER_WORKERS, CPU_LIMIT, *_THREADS, MAX_UPLOAD_BYTES, MAX_INFER_BATCH, SERVED_BY, TRAINER_URL,
        ALLOWED_HOSTS, SERVICE_NAME, RATE_LIMIT, MAX_EVALUATIONS, MAX_BATCH, BATCH_WINDOW_MS."""
        env = os.environ
        role = env.get("ROLE", "all").strip().lower()
        if role not in ROLES:
            raise ValueError(f"ROLE must be one of {', '.join(ROLES)}, got {role!r}")
        port = int(env.get("PORT", default_port))
        workers = server_workers(role)
        cpu_limit = int(env.get("CPU_LIMIT") or detect_cpu_limit())
        # SERVICE_NAME: the name compose, Swarm and Kubernetes give this framework's servers; by default the
        # service's folder, where gunicorn runs (services/torch locally, /app/services/torch in the image).
        service_name = env.get("SERVICE_NAME") or Path.cwd().name
        return cls(
            port=port,
            mnist_dir=Path(env.get("MNIST_DIR", "data/mnist")),
            model_repository=Path(env.get("MODEL_REPOSITORY") or env.get("MODEL_DIR") or "models"),
            max_upload_bytes=int(env.get("MAX_UPLOAD_BYTES", 10 * 1024 * 1024)),
            # Workers x threads must fit the CPU limit, or the workers only steal cores from each other.
            intra_op_threads=int(env.get("INTRA_OP_THREADS") or max(1, cpu_limit // workers)),
            inter_op_threads=int(env.get("INTER_OP_THREADS", 1)),
            max_infer_batch=int(env.get("MAX_INFER_BATCH", 1024)),
            role=role,
            keep_versions=max(2, int(env.get("KEEP_VERSIONS", 5))),
            model_poll_s=float(env.get("MODEL_POLL_S", 2.0)),
            workers=workers,
            cpu_limit=cpu_limit,
            served_by=env.get("SERVED_BY") or f"{socket.gethostname()}:{port}",
            service_name=service_name,
            trainer_url=env.get("TRAINER_URL") or None,
            allowed_hosts=service_hosts(env.get("ALLOWED_HOSTS"), service_name, socket.gethostname()),
            rate_limit=env.get("RATE_LIMIT") or None,
            max_evaluations=max(1, int(env.get("MAX_EVALUATIONS", 2))),
            max_batch=max(1, int(env.get("MAX_BATCH", 32))),
            batch_window_ms=max(0.0, float(env.get("BATCH_WINDOW_MS", 2.0))),
        )


def server_workers(role: str | None = None) -> int:
    """gunicorn workers: SERVER_WORKERS for a server; one for a trainer, whose job lives in its process."""
    role = role or os.environ.get("ROLE", "all").strip().lower()
    if role != "server":
        return 1
    return max(1, int(os.environ.get("SERVER_WORKERS", 1)))


WORKER_INDEX_ENV = "GUNICORN_WORKER_INDEX"  # set in each worker by servekit.gunicorn_settings.post_fork


def worker_index() -> int:
    """This gunicorn worker's index among the server's live workers (0, 1, ...); 0 outside gunicorn."""
    return int(os.environ.get(WORKER_INDEX_ENV, "0"))


def detect_cpu_limit() -> int:
    """The CPUs this process may use: the cgroup v2 quota when one is set, else the CPU affinity."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return max(1, min(available, round(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return available
