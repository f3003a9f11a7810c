"""Gateway configuration, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from servekit.web_security import parse_allowed_hosts

from .discovery import parse_service_map

MAX_BATCH_LIMIT = 64  # GATEWAY_MAX_BATCH at most: beyond it a fan-out gains little, and one refusal fails more uploads
DEFAULT_SERVICE_URLS = ("keras=http://127.0.0.1:8001,torch=http://127.0.0.1:8002,tf=http://127.0.0.1:8003,"
                        "jax=http://127.0.0.1:8004")


@dataclass(frozen=True)
class GatewaySettings:
    """SERVICE_URLS (servers), TRAINER_URLS, GATEWAY_DATA_DIR, timeouts, limits and discovery."""

    service_urls: dict[str, list[str]]
    data_dir: Path
    predict_timeout_s: float
    max_upload_bytes: int
    trainer_urls: dict[str, list[str]] | None = None  # None: the servers also train (ROLE=all)
    discovery_refresh_s: float = 5.0
    allowed_hosts: list[str] | None = None  # None: any Host header
    rate_limit: str | None = None  # per client on /predict, e.g. "20/second"; None: off
    max_evaluations: int = 2  # concurrent /evaluate calls
    public_url: str = "http://127.0.0.1:8000"  # where users open the page (printed with the token)
    job_deadline_s: float = 6 * 3600.0  # a training job without a result by then is cancelled and failed
    threads: int = 16  # waitress request threads (GATEWAY_THREADS): sizes the interactive fan-out pool
    max_batch: int = 16  # /predict uploads per fan-out (GATEWAY_MAX_BATCH); at most the services' MAX_INFER_BATCH
    batch_window_ms: float = 2.0  # longest wait for uploads still being decoded (GATEWAY_BATCH_WINDOW_MS); 0: off

    @classmethod
    def from_env(cls) -> GatewaySettings:
        env = os.environ
        trainers = env.get("TRAINER_URLS", "").strip()
        return cls(
            service_urls=parse_service_map(env.get("SERVICE_URLS", DEFAULT_SERVICE_URLS)),
            data_dir=Path(env.get("GATEWAY_DATA_DIR", "data/gateway")),
            predict_timeout_s=float(env.get("PREDICT_TIMEOUT_S", "5")),
            max_upload_bytes=int(env.get("MAX_UPLOAD_BYTES", 10 * 1024 * 1024)),
            trainer_urls=parse_service_map(trainers) if trainers else None,
            discovery_refresh_s=float(env.get("DISCOVERY_REFRESH_S", "5")),
            allowed_hosts=parse_allowed_hosts(env.get("ALLOWED_HOSTS"), env.get("HOST")),
            rate_limit=env.get("RATE_LIMIT") or None,
            max_evaluations=max(1, int(env.get("MAX_EVALUATIONS", 2))),
            job_deadline_s=float(env.get("JOB_DEADLINE_S", 6 * 3600)),
            threads=max(1, int(env.get("GATEWAY_THREADS", 16))),
            max_batch=min(MAX_BATCH_LIMIT, max(1, int(env.get("GATEWAY_MAX_BATCH", 16)))),
            batch_window_ms=max(0.0, float(env.get("GATEWAY_BATCH_WINDOW_MS", 2.0))),
            public_url=(env.get("PUBLIC_URL") or f"http://127.0.0.1:{env.get('PORT', '8000')}").rstrip("/"),
        )
