"""The gateway's fan-out pools: batch work cannot starve interactive calls, and full pools refuse with 503."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time

import pytest

from gateway.clients import ServiceDirectory, ServiceError
from gateway.pools import BoundedPool, PoolTimeout
from servekit.errors import ApiError


class SlowAndFastHandler(http.server.BaseHTTPRequestHandler):
    """/slow takes as long as the server's ``release`` event stays unset; anything else answers at once."""

    def do_GET(self):
        if self.path.startswith("/slow"):
            self.server.release.wait(30)
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def services():
    """Three real HTTP services on loopback that can be held busy."""
    servers = []
    for _ in range(3):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowAndFastHandler)
        server.release = threading.Event()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    yield {f"s{i}": f"http://127.0.0.1:{s.server_address[1]}" for i, s in enumerate(servers)}, servers
    for server in servers:
        server.release.set()
        server.shutdown()


def test_batch_work_filling_its_pool_leaves_interactive_calls_answering(services):
    urls, servers = services
    directory = ServiceDirectory(urls, interactive_threads=2)
    slow = lambda client: client.call("GET", "/slow", 30).body  # noqa: E731
    fast = lambda client: client.call("GET", "/health", 5).body  # noqa: E731
    busy = [threading.Thread(target=directory.fan_out, args=(slow,), kwargs={"pool": "batch"}) for _ in range(3)]
    for thread in busy:
        thread.start()
    time.sleep(0.5)
    assert directory.pools["batch"].in_use == directory.pools["batch"].workers == 6  # all held by /slow calls
    answers = directory.fan_out(fast)
    assert answers == {name: {"ok": True} for name in urls}
    for server in servers:
        server.release.set()
    for thread in busy:
        thread.join(10)


def test_a_full_pool_refuses_with_503_and_recovers():
    pool = BoundedPool("batch", workers=1, queue_limit=1, timeout_s=5)
    release = threading.Event()
    running = pool.submit(release.wait, 10)
    waiting = pool.submit(lambda: "second")
    with pytest.raises(ApiError) as refused:
        pool.submit(lambda: "third")
    assert refused.value.status == 503 and "full" in refused.value.message
    release.set()
    assert pool.result(running) is True and pool.result(waiting) == "second"
    assert pool.result(pool.submit(lambda: "again")) == "again"  # slots were given back


def test_work_without_a_result_in_time_is_a_timeout_and_never_starts_late():
    pool = BoundedPool("interactive", workers=1, queue_limit=4, timeout_s=0.3)
    release, started = threading.Event(), []
    blocker = pool.submit(release.wait, 10)
    late = pool.submit(lambda: started.append(True))
    with pytest.raises(PoolTimeout, match="busy"):
        pool.result(late)
    release.set()
    pool.result(blocker, timeout_s=5)
    time.sleep(0.2)
    assert started == []  # dropped while waiting: it never ran


def test_fan_out_reports_a_timed_out_service_as_an_error_entry(services):
    urls, servers = services
    directory = ServiceDirectory(urls, interactive_timeout_s=0.5)
    answers = directory.fan_out(lambda client: client.call("GET", "/slow" if client.name == "s0" else "/h", 30).body)
    assert isinstance(answers["s0"], ServiceError) and "no result within" in str(answers["s0"])
    assert answers["s1"] == answers["s2"] == {"ok": True}
    servers[0].release.set()


def test_a_call_stuck_on_a_pool_thread_never_keeps_the_process_alive():
    """A process whose pool threads are busy (a slow service) exits at once: they are daemons
    (ThreadPoolExecutor's threads are joined at exit, which made a stopped gateway wait for its slowest call)."""
    script = ("import threading, time\n"
              "from gateway.pools import BoundedPool, DaemonExecutor\n"
              "pool = BoundedPool('batch', 2, 2, 60)\n"
              "pool.submit(time.sleep, 600)\n"
              "with DaemonExecutor(1) as executor:\n"
              "    done = executor.submit(lambda: 42).result(5)\n"
              "executor_left = DaemonExecutor(1)\n"
              "executor_left.submit(time.sleep, 600)\n"
              "print(done, flush=True)\n")
    started = time.monotonic()
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "42"
    assert time.monotonic() - started < 30  # not the 600 s of the stuck calls
