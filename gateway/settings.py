"""Gateway configuration, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SERVICE_URLS = "keras=http://127.0.0.1:8001,torch=http://127.0.0.1:8002,tf=http://127.0.0.1:8003"


@dataclass(frozen=True)
class GatewaySettings:
    """SERVICE_URLS, GATEWAY_DATA_DIR, timeouts and limits."""

    service_urls: dict[str, str]
    data_dir: Path
    predict_timeout_s: float
    max_upload_bytes: int

    @classmethod
    def from_env(cls) -> GatewaySettings:
        env = os.environ
        return cls(
            service_urls=parse_service_urls(env.get("SERVICE_URLS", DEFAULT_SERVICE_URLS)),
            data_dir=Path(env.get("GATEWAY_DATA_DIR", "data/gateway")),
            predict_timeout_s=float(env.get("PREDICT_TIMEOUT_S", "5")),
            max_upload_bytes=int(env.get("MAX_UPLOAD_BYTES", 10 * 1024 * 1024)),
        )


def parse_service_urls(text: str) -> dict[str, str]:
    """'keras=http://keras:8001,torch=http://torch:8002' -> {"keras": "http://keras:8001", ...}."""
    services = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise ValueError(f"SERVICE_URLS entry {item!r} is not name=url")
        services[name.strip()] = url.strip().rstrip("/")
    return services
