"""The torch service as `make run` starts it (gunicorn from .venvs/torch), for a benchmark that brings its own.

``train_tiny`` writes a small trained version into a fresh model repository (a ``ROLE=all`` process, one epoch
on a few thousand images: enough for a real answer, in seconds); ``start_server`` serves a repository with
``ROLE=server`` and ``SERVER_WORKERS`` gunicorn workers, as compose deploys it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from servekit.repository import ModelRepository
from servekit.testing import ServiceProcess, wait_for_job

from .payload import ROOT, mnist_dir

MODEL = "torch"


def _process(repository: Path, log_dir: Path, env: dict[str, str]) -> ServiceProcess:
    venv = ROOT / ".venvs" / "torch"
    if not (venv / "bin" / "gunicorn").exists():
        raise SystemExit(f"{venv} is missing: run `make install` first (it builds every service's venv)")
    base = {"MNIST_DIR": str(mnist_dir()), "MODEL_REPOSITORY": str(repository), **env}
    process = ServiceProcess(ROOT / "services" / "torch", venv, base)
    process.log_path = Path(log_dir) / f"torch-{env.get('ROLE', 'all')}-{process.port}.log"
    return process


def train_tiny(repository: Path, log_dir: Path, train_limit: int = 3000, epochs: int = 1) -> int:
    """Train the torch model into ``repository`` with a throw-away ROLE=all process; return the version."""
    import requests

    token = secrets.token_urlsafe(16)
    trainer = _process(repository, log_dir, {"ROLE": "all", "API_TOKEN": token}).start()
    try:
        response = requests.post(trainer.url + "/train", timeout=30, headers={"Authorization": f"Bearer {token}"},
                                 json={"model": MODEL, "epochs": epochs, "train_limit": train_limit})
        response.raise_for_status()
        job = wait_for_job(trainer.url + response.json()["status_url"], timeout=900)
        if job["status"] != "succeeded":
            raise RuntimeError(f"training the torch model failed: {job.get('error')}\n{trainer.log_tail()}")
    finally:
        trainer.stop()
    return promoted_version(repository)


def promoted_version(repository: Path) -> int:
    """The torch version the repository serves, or a clear exit when it has none."""
    version = ModelRepository(repository).promoted(MODEL)
    if version is None:
        raise SystemExit(f"{repository} has no trained torch model ({repository}/torch/<version>/weights.pt); "
                         "train one (POST /train to the torch service) or leave out --model-repository")
    return version


def weights_file(repository: Path) -> tuple[Path, int]:
    """The promoted torch version's weight file and its version number."""
    version = promoted_version(repository)
    path = ModelRepository(repository).folder(MODEL, version) / "weights.pt"
    if not path.is_file():
        raise SystemExit(f"{path} is missing")
    return path, version


def start_server(repository: Path, log_dir: Path, workers: int, extra_env: dict[str, str] | None = None
                 ) -> ServiceProcess:
    """A ROLE=server torch service over ``repository`` with ``workers`` gunicorn workers, healthy and serving."""
    env = {"ROLE": "server", "SERVER_WORKERS": str(workers), "API_TOKEN": secrets.token_urlsafe(16),
           "INTRA_OP_THREADS": "", "INTER_OP_THREADS": "1", **(extra_env or {})}
    server = _process(repository, log_dir, env).start()
    try:
        wait_ready(server.url, samples=4 * workers)
    except BaseException:
        server.stop()
        raise
    return server


def wait_ready(url: str, samples: int = 4, timeout: float = 120.0) -> None:
    """Until ``samples`` calls in a row find the torch model ready (each worker loads it on its own)."""
    import time

    import requests

    deadline, streak = time.monotonic() + timeout, 0
    while streak < samples:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not serve the torch model within {timeout} s")
        try:
            ok = requests.get(f"{url}/v2/models/{MODEL}/ready", timeout=5).status_code == 200
        except requests.RequestException:
            ok = False
        streak = streak + 1 if ok else 0
        if not ok:
            time.sleep(0.3)
