"""Helpers for the stop tests: a process tree watched by PID, work kept in flight while it is stopped."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import requests

from gateway.store import Store
from servekit.testing import TEST_TOKEN

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
STOP_LIMIT_S = 5.0  # what the issue asks of every process, after SIGINT or SIGTERM


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and every descendant now."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def seconds_until_gone(processes: list[psutil.Process], limit_s: float = 30.0) -> tuple[float, list[str]]:
    """Seconds until none of ``processes`` runs (a zombie counts as gone), and those left after ``limit_s``."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        left = [p for p in processes if _running(p)]
        if not left:
            return time.monotonic() - started, []
        time.sleep(0.05)
    return time.monotonic() - started, [f"{p.pid} {' '.join(p.cmdline()[:3])}" for p in processes if _running(p)]


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class PredictionStream:
    """Posts a digit to ``url`` over and over from a few threads until stopped (errors are expected at the end)."""

    def __init__(self, url: str, threads: int = 3):
        self.url, self.answered, self._stop = url, 0, threading.Event()
        self._threads = [threading.Thread(target=self._post, daemon=True) for _ in range(threads)]

    def __enter__(self) -> PredictionStream:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _post(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                session.post(self.url, json={"pixels": [[0.5] * 28] * 28}, timeout=5)
                self.answered += 1
            except requests.RequestException:
                time.sleep(0.05)


def wait_for_training(gateway_url: str, run_id: str, timeout_s: float = 180) -> dict:
    """The run once one of its models has taken a training step."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = requests.get(f"{gateway_url}/runs/{run_id}", timeout=10).json()
        if any(m.get("status") == "running" and (m.get("step") or 0) > 0 for m in run["models"].values()):
            return run
        assert run["status"] in ("queued", "running"), run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} never started training")


def stored_run(data_dir: Path, run_id: str) -> dict:
    """The run as the gateway's SQLite file holds it (read after the gateway is gone)."""
    return Store(data_dir / "gateway.sqlite3").get("runs", run_id)


def versions_on_disk(model_folder: Path) -> list[str]:
    """The numbered version folders of one model in a repository (staging folders are not versions)."""
    return sorted(p.name for p in model_folder.glob("*") if p.name.isdigit()) if model_folder.exists() else []
