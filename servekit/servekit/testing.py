"""Test helpers: run a real service under gunicorn on a loopback port, and wait for it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import requests

from .images import png_bytes  # noqa: F401  (re-exported: tests and scripts encode uploads with it)

TEST_TOKEN = "test-token-4f1d"  # API_TOKEN of the services and gateways the tests start


def authorized() -> requests.Session:
    """A session that sends ``Authorization: Bearer TEST_TOKEN`` with every request."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TEST_TOKEN}"
    return session


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """A server started in ``folder`` as `make run` starts it: ``<venv>/bin/gunicorn -c <config> <app>``, or
    ``<venv>/bin/python -m <module>`` when ``module`` is given (the gateway's waitress)."""

    def __init__(self, folder: Path, venv: Path, env: dict[str, str], port: int | None = None,
                 app: str = "app:app", config: str = "gunicorn.conf.py", module: str | None = None):
        self.folder, self.venv, self.app, self.config = Path(folder), Path(venv), app, config
        self.command = ([str(self.venv / "bin" / "python"), "-m", module] if module
                        else [str(self.venv / "bin" / "gunicorn"), "-c", config, app])
        self.port = port or free_port()
        self.env = {**os.environ, **env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.url = f"http://127.0.0.1:{self.port}"
        log_dir = env.get("MODEL_REPOSITORY") or env.get("MODEL_DIR") or env.get("GATEWAY_DATA_DIR") or "/tmp"
        self.log_path = Path(log_dir) / f"server-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> ServiceProcess:
        """Start the process and wait until /health answers."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.command, cwd=self.folder, env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT)
        wait_healthy(self.url + "/health", timeout, self.process, self.log_path)
        return self

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), then kill if it lingers."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        """The end of the process's log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_healthy(
    url: str, timeout: float, process: subprocess.Popen | None = None, log_path: Path | None = None
) -> None:
    """Poll ``url`` until it answers 200; fail early if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:] if log_path else ""
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered:\n{tail}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def wait_for_job(status_url: str, timeout: float = 300.0, seen: list | None = None) -> dict:
    """Poll a training job until it ends; appends every distinct status to ``seen``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = requests.get(status_url, timeout=10).json()
        if seen is not None and (not seen or seen[-1] != status["status"]):
            seen.append(status["status"])
        if status["status"] in ("succeeded", "failed", "cancelled"):
            return status
        time.sleep(0.2)
    raise TimeoutError(f"{status_url} did not finish within {timeout} s")


def assert_matches_openapi(spec: dict, method: str, path: str, response: requests.Response) -> None:
    """Validate a response's status and JSON body against the app's own OpenAPI document.

    ``path`` is the path template as the document lists it, e.g. ``/train/{job_id}``.
    """
    from openapi_schema_validator import OAS30Validator, validate

    operation = spec["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {path} answered {status}, not in the document"
    content = operation["responses"][status].get("content", {})
    if "application/json" not in content:
        return
    schema = content["application/json"]["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    validate(response.json(), schema, cls=OAS30Validator)
