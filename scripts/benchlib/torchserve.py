"""TorchServe as a peer: the torch service's promoted weights, served by TorchServe 0.12 (1 worker by default).

The model archive holds the promoted version's ``weights.pt`` from the torch service's model repository,
``scripts/torchserve/handler.py`` and ``services/torch/backend.py`` (so TorchServe runs the service's own
``TorchBackend.predict`` after the services' own ``servekit.images.image_to_input``), with the same thread
counts as a one-worker torch server. TorchServe runs from its own venv (``.venvs/torchserve``, built here from
``scripts/torchserve/requirements.txt`` when missing or stale) on free loopback ports, token auth off, no config
snapshots, system metrics off (a Python process it would spawn every minute, not part of serving a request),
its model store, logs and pid file in a temporary folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from servekit.testing import free_port

from .payload import ROOT

VENV = ROOT / ".venvs" / "torchserve"
FOLDER = ROOT / "scripts" / "torchserve"
REQUIREMENTS = FOLDER / "requirements.txt"
HANDLER = FOLDER / "handler.py"
BACKEND = ROOT / "services" / "torch" / "backend.py"
MODEL_NAME = "mnist"
JRE_PACKAGE = "openjdk-17-jre-headless"


def _quiet_run(command: list[str], what: str, **kwargs) -> None:
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed (exit {done.returncode}): {' '.join(command)}\n{done.stdout[-3000:]}")


def ensure_venv(say: Callable[[str], None] = print) -> Path:
    """``.venvs/torchserve`` with the pinned packages and servekit; (re)built when the requirements changed."""
    marker = VENV / ".installed"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if marker.is_file() and marker.read_text().strip() == digest:
        return VENV
    say(f"building {VENV.relative_to(ROOT)} from {REQUIREMENTS.relative_to(ROOT)} (once; a minute or two)")
    python = shutil.which("python3") or sys.executable
    if not (VENV / "bin" / "python").exists():
        _quiet_run([python, "-m", "venv", str(VENV)], "creating the TorchServe venv")
    pip = [str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    _quiet_run([*pip, "-r", str(REQUIREMENTS)], "installing TorchServe")
    _quiet_run([*pip, "--no-deps", "-e", str(ROOT / "servekit")], "installing servekit into the TorchServe venv")
    _quiet_run([str(VENV / "bin" / "python"), "-c", "import torch, torchvision, ts, model_archiver, servekit.images"],
               "importing torch, TorchServe and servekit in the TorchServe venv")
    marker.write_text(digest + "\n")
    return VENV


def find_or_install_java(install: bool = True, say: Callable[[str], None] = print) -> str | None:
    """``java`` (17 or newer, as TorchServe 0.12 wants); installed from Debian's packages when missing and root."""
    java = shutil.which("java")
    if java or not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return java
    say(f"installing Debian's {JRE_PACKAGE} for TorchServe (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    if subprocess.run(["apt-get", "install", "-y", "-qq", JRE_PACKAGE], **quiet).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], **quiet)
        subprocess.run(["apt-get", "install", "-y", "-qq", JRE_PACKAGE], **quiet)
    return shutil.which("java")


def java_version(java: str) -> str:
    done = subprocess.run([java, "-version"], capture_output=True, text=True)
    first = (done.stderr or done.stdout).splitlines()
    return first[0] if first else "unknown"


class TorchServe:
    """One TorchServe instance serving ``weights`` as model ``mnist`` with ``workers`` backend workers."""

    def __init__(self, weights: Path, workdir: Path, intra_op_threads: int, inter_op_threads: int = 1,
                 batch_size: int = 1, max_batch_delay_ms: int = 2, env: dict[str, str] | None = None,
                 workers: int = 1):
        self.weights, self.workdir = Path(weights), Path(workdir)
        self.workers = workers  # TorchServe backend workers (Python processes), said in every report
        self.extra_env = dict(env or {})  # e.g. OMP_WAIT_POLICY, inherited by the Java frontend and its workers
        self.threads = {"intra_op": intra_op_threads, "inter_op": inter_op_threads}
        # TorchServe's dynamic batching: up to batch_size requests, waiting up to max_batch_delay_ms for them to
        # come (a lone request waits the whole delay); batch_size 1, TorchServe's default, turns it off.
        self.batch_size, self.max_batch_delay_ms = batch_size, max_batch_delay_ms
        self.process: subprocess.Popen | None = None
        self.inference_port = self.management_port = self.metrics_port = 0
        self.log_path = self.workdir / "torchserve.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.inference_port}/predictions/{MODEL_NAME}"

    def start(self, timeout: float = 240.0, say: Callable[[str], None] = print) -> TorchServe:
        java = find_or_install_java(say=say)
        if not java:
            raise SystemExit(f"TorchServe needs Java 17: install {JRE_PACKAGE} (apt-get needs root)")
        self.java = java_version(java)
        ensure_venv(say)
        store, tmp, logs = (self.workdir / name for name in ("model-store", "tmp", "logs"))
        for folder in (store, tmp, logs):
            folder.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "bench_config.json"
        config.write_text(json.dumps({"intra_op_threads": self.threads["intra_op"],
                                      "inter_op_threads": self.threads["inter_op"]}))
        staged = self.workdir / "weights.pt"  # the archiver keeps the file's name: the backend loads weights.pt
        shutil.copyfile(self.weights, staged)
        _quiet_run([str(VENV / "bin" / "torch-model-archiver"), "--model-name", MODEL_NAME, "--version", "1.0",
                    "--serialized-file", str(staged), "--handler", str(HANDLER),
                    "--extra-files", f"{BACKEND},{config}", "--export-path", str(store), "--force"],
                   "torch-model-archiver")
        self.inference_port, self.management_port, self.metrics_port = free_port(), free_port(), free_port()
        properties = self.workdir / "config.properties"
        properties.write_text("\n".join([
            f"inference_address=http://127.0.0.1:{self.inference_port}",
            f"management_address=http://127.0.0.1:{self.management_port}",
            f"metrics_address=http://127.0.0.1:{self.metrics_port}",
            f"default_workers_per_model={self.workers}",
            "disable_system_metrics=true",
            f"load_models={MODEL_NAME}.mar",
            "models=" + json.dumps({MODEL_NAME: {"1.0": {
                "defaultVersion": True, "marName": f"{MODEL_NAME}.mar",
                "minWorkers": self.workers, "maxWorkers": self.workers,
                "batchSize": self.batch_size, "maxBatchDelay": self.max_batch_delay_ms, "responseTimeout": 120}}}),
            "",
        ]))
        # TMPDIR: TorchServe's pid file lives in the temp folder; a private one lets instances run side by side.
        env = {**os.environ, **self.extra_env, "TMPDIR": str(tmp), "TEMP": str(tmp), "LOG_LOCATION": str(logs),
               "METRICS_LOCATION": str(logs), "PATH": f"{Path(java).parent}:{os.environ.get('PATH', '')}"}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(VENV / "bin" / "torchserve"), "--start", "--foreground", "--ncs", "--disable-token-auth",
             "--model-store", str(store), "--ts-config", str(properties)],
            cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        status_url = f"http://127.0.0.1:{self.management_port}/models/{MODEL_NAME}"
        ts_log = self.workdir / "logs" / "ts_log.log"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"TorchServe exited with {self.process.returncode}:\n{self.log_tail()}")
            try:  # TorchServe restarts a failing worker forever (with back-off): give up on the second death
                deaths = ts_log.read_text(errors="replace").count("Worker died.")
            except OSError:
                deaths = 0
            if deaths >= 2:
                raise RuntimeError(f"TorchServe's worker keeps dying (see model_log.log):\n{self.log_tail()}")
            try:
                described = requests.get(status_url, timeout=2).json()
                workers = described[0].get("workers", [])
                if len(workers) >= self.workers and all(w.get("status") == "READY" for w in workers):
                    return
            except (requests.RequestException, ValueError, LookupError, AttributeError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"TorchServe's worker was not ready within {timeout} s:\n{self.log_tail()}")

    def describe(self) -> dict:
        version = ""
        try:
            version = (VENV / "lib").glob("python*/site-packages/ts/version.txt").__next__().read_text().strip()
        except (StopIteration, OSError):
            pass
        batching = {"batch_size": self.batch_size, "max_batch_delay_ms": self.max_batch_delay_ms,
                    "enabled": self.batch_size > 1}
        return {"server": f"TorchServe {version} (Java frontend, {self.workers} Python backend worker(s))",
                "workers": self.workers,
                "batching": batching, "threads": self.threads, "java": getattr(self, "java", None),
                "handler": str(HANDLER.relative_to(ROOT)), "weights": str(self.weights)}

    def log_tail(self, lines: int = 40) -> str:
        texts = []
        for path in [self.log_path, *sorted((self.workdir / "logs").glob("*.log"))]:
            try:
                texts.append(f"== {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
            except OSError:
                continue
        return "\n".join(texts)

    def stop(self) -> None:
        """Stop the CLI process we started, its Java frontend and the Python workers (by pid, children first)."""
        if self.process is None:
            return
        import psutil

        try:
            tree = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            tree = []
        if self.process.poll() is None:
            self.process.terminate()  # the torchserve CLI (it waits on Java in --foreground)
        for process in tree:  # Java, then its Python workers
            try:
                process.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(tree, timeout=15)
        for process in alive:
            try:
                process.kill()
            except psutil.Error:
                pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
