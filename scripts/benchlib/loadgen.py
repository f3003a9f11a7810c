"""Load generators: closed-loop, keep-alive, ``concurrency`` connections each with one request in flight.

Two generators, one result type:

- ``WrkClient``: Debian's ``wrk`` (C, epoll) with a small Lua script that sets the multipart body and headers
  and writes wrk's own summary (request count, errors by kind, latency percentiles in microseconds) as JSON.
  Costs a few microseconds of CPU per request: on a 2-core box shared with the servers under test it takes
  the least CPU away from them, which is why it is the default.
- ``PythonClient``: a fallback when wrk cannot be installed: one process per core, each with threads that
  own one keep-alive ``urllib3`` connection each, latencies timed with ``perf_counter`` around every request.

Both report what the generator itself spent (CPU of the finished child processes, ``RUSAGE_CHILDREN``), so a
run shows whether the client took CPU the server could have used.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

Tick = Callable[[float], None]  # called with the elapsed seconds while a run goes on (progress bars)

WRK_SCRIPT = r"""
-- scripts/bench: POST the same multipart body to every endpoint; report wrk's summary as JSON.
local function slurp(path)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  return data
end
wrk.method = "POST"
wrk.body = slurp(os.getenv("BENCH_BODY"))
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local auth = os.getenv("BENCH_AUTHORIZATION")
if auth ~= nil and auth ~= "" then
  wrk.headers["Authorization"] = auth
end

done = function(summary, latency, requests)
  local e = summary.errors
  local out = assert(io.open(os.getenv("BENCH_OUT"), "w"))
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d}, "latency_us": {"min": %d, "max": %d, "mean": %.3f, "p50": %d, "p90": %d, "p99": %d}}',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
  out:close()
end
"""


@dataclass
class Target:
    """Where to send the load, and the request: the same body and headers for every call."""

    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Run:
    """One timed run at one concurrency."""

    requests: int  # responses received in the window, any status
    errors: int  # non-2xx/3xx responses plus connection, read, write errors and timeouts
    error_kinds: dict[str, int]
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    client_cpu_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- wrk ---------------------------------------------------------------------------------------------------------


def find_or_install_wrk(install: bool = True, say: Callable[[str], None] = print) -> str | None:
    """The path of ``wrk``; when missing and we are root, installed from Debian's packages (apt-get)."""
    found = shutil.which("wrk")
    if found or not install:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    say("installing Debian's wrk (apt-get install wrk) for the load generator")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], **quiet).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], **quiet)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], **quiet)
    return shutil.which("wrk")


class WrkClient:
    """Debian's wrk driven through a Lua script; threads = min(concurrency, CPUs)."""

    kind = "wrk"

    def __init__(self, executable: str, workdir: Path):
        self.executable = executable
        self.workdir = Path(workdir)
        self.script = self.workdir / "bench.lua"
        self.script.write_text(WRK_SCRIPT)
        self._bodies: dict[bytes, Path] = {}

    def describe(self) -> dict:
        probe = subprocess.run([self.executable, "-v"], capture_output=True, text=True)
        match = re.search(r"wrk\s+(\S+)", probe.stdout + probe.stderr)
        return {"kind": self.kind, "executable": self.executable, "version": match.group(1) if match else None,
                "threads": "min(concurrency, CPUs)", "connections": "concurrency, keep-alive"}

    def run(self, target: Target, concurrency: int, seconds: float, timeout_s: float = 30.0,
            tick: Tick | None = None) -> Run:
        threads = max(1, min(concurrency, os.cpu_count() or 1))
        out = Path(tempfile.mkstemp(prefix="wrk-", suffix=".json", dir=self.workdir)[1])
        headers = {k.lower(): v for k, v in target.headers.items()}
        env = {**os.environ, "BENCH_BODY": str(self._body_file(target.body)), "BENCH_OUT": str(out),
               "BENCH_CONTENT_TYPE": headers.get("content-type", "application/octet-stream"),
               "BENCH_AUTHORIZATION": headers.get("authorization", "")}
        # wrk's -d takes whole seconds: it is given more, and stopped with SIGINT (it then reports as usual, the
        # duration it measured included) once ``seconds`` have passed.
        command = [self.executable, f"-t{threads}", f"-c{concurrency}", f"-d{math.ceil(seconds) + 60}s",
                   f"--timeout={math.ceil(timeout_s)}s", "-s", str(self.script), target.url]
        cpu_before = children_cpu_s()
        started = time.monotonic()
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output = _wait(process, started, tick, stop_after=seconds)
        client_cpu = children_cpu_s() - cpu_before
        try:
            summary = json.loads(out.read_text())
        except (OSError, ValueError):
            raise RuntimeError(f"wrk failed (exit {process.returncode}): {' '.join(command)}\n{output}") from None
        finally:
            out.unlink(missing_ok=True)
        kinds = {k: v for k, v in summary["errors"].items() if v}
        latency = summary["latency_us"]
        return Run(
            requests=summary["requests"], errors=sum(kinds.values()), error_kinds=kinds,
            seconds=summary["duration_us"] / 1e6,
            p50_ms=latency["p50"] / 1000, p90_ms=latency["p90"] / 1000, p99_ms=latency["p99"] / 1000,
            mean_ms=latency["mean"] / 1000, max_ms=latency["max"] / 1000, client_cpu_s=client_cpu,
            extra={"threads": threads},
        )

    def _body_file(self, body: bytes) -> Path:
        if body not in self._bodies:
            path = self.workdir / f"body-{len(self._bodies)}.bin"
            path.write_bytes(body)
            self._bodies[body] = path
        return self._bodies[body]


def _wait(process: subprocess.Popen, started: float, tick: Tick | None, stop_after: float) -> str:
    """Wait for ``process``, interrupting it (SIGINT) ``stop_after`` seconds after ``started`` and calling ``tick``
    with the elapsed time meanwhile; returns its output."""
    interrupted = False
    while True:
        left = stop_after - (time.monotonic() - started)
        try:
            output, _ = process.communicate(timeout=min(0.2, left) if left > 0 else 0.2)
            return output or ""
        except subprocess.TimeoutExpired:
            if tick:
                tick(min(time.monotonic() - started, stop_after))
            if time.monotonic() - started >= stop_after and not interrupted:
                process.send_signal(signal.SIGINT)
                interrupted = True


# -- Python ------------------------------------------------------------------------------------------------------


class PythonClient:
    """One process per CPU (at most one per connection), each with a thread per connection it owns; every thread
    keeps one keep-alive urllib3 connection and sends the next request as soon as the last one is answered."""

    kind = "python"

    def __init__(self, processes: int | None = None):
        self.processes = processes or os.cpu_count() or 1

    def describe(self) -> dict:
        import urllib3

        return {"kind": self.kind, "urllib3": urllib3.__version__, "processes": f"min(concurrency, {self.processes})",
                "connections": "concurrency, keep-alive, one thread each"}

    def run(self, target: Target, concurrency: int, seconds: float, timeout_s: float = 30.0,
            tick: Tick | None = None) -> Run:
        processes = max(1, min(concurrency, self.processes))
        shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
        context = multiprocessing.get_context("fork")
        queue = context.SimpleQueue()
        start_at = time.monotonic() + 0.2  # CLOCK_MONOTONIC is system-wide: every process starts together
        end_at = start_at + seconds
        cpu_before = children_cpu_s()
        workers = [context.Process(target=_python_worker, daemon=True,
                                   args=(queue, target, share, start_at, end_at, timeout_s)) for share in shares]
        for worker in workers:
            worker.start()
        results = []
        while len(results) < len(workers):
            if not queue.empty():
                results.append(queue.get())
                continue
            if tick:
                tick(max(0.0, time.monotonic() - start_at))
            if not any(w.is_alive() for w in workers) and queue.empty():
                raise RuntimeError("a load-generator process died without reporting")
            time.sleep(0.1)
        for worker in workers:
            worker.join()
        client_cpu = children_cpu_s() - cpu_before
        latencies = np.concatenate([np.frombuffer(r[0], dtype=np.float64) for r in results])
        kinds = Counter()
        for _, errors in results:
            kinds.update(errors)
        return _run_from(latencies, dict(kinds), seconds, client_cpu, {"processes": processes})


def _python_worker(queue, target: Target, connections: int, start_at: float, end_at: float, timeout_s: float):
    import urllib3

    parts = urlsplit(target.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    pool_class = urllib3.HTTPSConnectionPool if parts.scheme == "https" else urllib3.HTTPConnectionPool
    latencies: list[float] = []
    errors: Counter = Counter()
    lock = threading.Lock()

    def caller():
        pool = pool_class(parts.hostname, parts.port, maxsize=1, block=True, retries=False,
                          timeout=urllib3.Timeout(total=timeout_s))
        mine, failed = [], Counter()
        time.sleep(max(0.0, start_at - time.monotonic()))
        while True:
            begun = time.perf_counter()
            try:
                response = pool.urlopen("POST", path, body=target.body, headers=target.headers, retries=False,
                                        preload_content=True)
                status = response.status
            except Exception as exc:  # noqa: BLE001 - every failure counts as an error of its kind
                status, kind = None, type(exc).__name__
            elapsed_ms = (time.perf_counter() - begun) * 1000
            if time.monotonic() > end_at:
                break  # completed after the window: not counted (as wrk does)
            mine.append(elapsed_ms)
            if status is None:
                failed[kind] += 1
            elif status >= 400:
                failed["status"] += 1
        pool.close()
        with lock:
            latencies.extend(mine)
            errors.update(failed)

    threads = [threading.Thread(target=caller) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put((np.asarray(latencies, dtype=np.float64).tobytes(), dict(errors)))


def _run_from(latencies_ms: np.ndarray, kinds: dict[str, int], seconds: float, client_cpu: float,
              extra: dict) -> Run:
    if latencies_ms.size:
        p50, p90, p99 = (float(v) for v in np.percentile(latencies_ms, [50, 90, 99]))
        mean, peak = float(latencies_ms.mean()), float(latencies_ms.max())
    else:
        p50 = p90 = p99 = mean = peak = float("nan")
    return Run(requests=int(latencies_ms.size), errors=sum(kinds.values()), error_kinds=kinds, seconds=seconds,
               p50_ms=p50, p90_ms=p90, p99_ms=p99, mean_ms=mean, max_ms=peak, client_cpu_s=client_cpu,
               extra=extra)


def make_client(kind: str, workdir: Path, say: Callable[[str], None] = print):
    """``wrk`` (installed with apt when missing and possible), ``python``, or ``auto``: wrk if it can be had."""
    if kind in ("wrk", "auto"):
        executable = find_or_install_wrk(say=say)
        if executable:
            return WrkClient(executable, workdir)
        if kind == "wrk":
            raise SystemExit("wrk is not installed and cannot be installed here (apt-get install wrk needs root)")
        say("wrk is not available: using the multi-process Python client (it takes more CPU per request)")
    return PythonClient()
