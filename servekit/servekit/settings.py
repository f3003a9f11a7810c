"""Service configuration, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Everything a service reads from its environment (DESIGN.md, "Ports and configuration")."""

    port: int
    mnist_dir: Path
    model_dir: Path
    max_upload_bytes: int
    intra_op_threads: int
    inter_op_threads: int
    max_infer_batch: int

    @classmethod
    def from_env(cls, default_port: int = 8000) -> Settings:
        """Read PORT, MNIST_DIR, MODEL_DIR, MAX_UPLOAD_BYTES, *_THREADS, MAX_INFER_BATCH."""
        env = os.environ
        return cls(
            port=int(env.get("PORT", default_port)),
            mnist_dir=Path(env.get("MNIST_DIR", "data/mnist")),
            model_dir=Path(env.get("MODEL_DIR", "models")),
            max_upload_bytes=int(env.get("MAX_UPLOAD_BYTES", 10 * 1024 * 1024)),
            intra_op_threads=int(env.get("INTRA_OP_THREADS", 2)),
            inter_op_threads=int(env.get("INTER_OP_THREADS", 1)),
            max_infer_batch=int(env.get("MAX_INFER_BATCH", 1024)),
        )
