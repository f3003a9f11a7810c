"""/metrics of a server with two gunicorn workers, over real HTTP: every scrape reports the sum over both workers,
whichever worker answers it, and a worker that dies takes its live gauges with it but none of its counts.

The counted route is GET /models: every worker answers it and nothing else calls it (the start-up polls /health),
so the exact total is known. Every request goes on a fresh connection, so that the kernel spreads them over the
workers' SO_REUSEPORT sockets.
"""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

CALLS = 200
SCRAPES = 20
MODELS = ("http_requests_total", (("endpoint", "/models"), ("method", "GET"), ("status", "200")))
SCRAPED = ("http_requests_total", (("endpoint", "/metrics"), ("method", "GET"), ("status", "200")))
IN_FLIGHT = ("http_requests_in_flight", ())


def parse(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text -> (sample name, sorted labels) -> value."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(server, timeout: float = 10) -> dict[tuple[str, tuple], float]:
    response = requests.get(server.url + "/metrics", timeout=timeout)  # no session: a new connection every time
    assert response.status_code == 200
    return parse(response.text)


def worker_counts(folder: Path, pid: int) -> dict[tuple[str, tuple], float]:
    """One worker's own counters, read from its file alone."""
    alone = folder.parent / f"alone-{pid}"
    alone.mkdir()
    shutil.copy(folder / f"counter_{pid}.db", alone)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(alone))
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.collect() for sample in family.samples}


def new_worker_started(master: psutil.Process, dead: int, server) -> bool:
    """A worker other than ``dead`` and the survivor has made its metric files (its app is being built)."""
    pids = {child.pid for child in master.children()} - {dead}
    return len(pids) == 2 and all((server.metrics_dir / f"gauge_livesum_{pid}.db").exists() for pid in pids)


@pytest.fixture(scope="module")
def server(tmp_path_factory, role_factory):
    """A torch server with two workers; TMPDIR is a folder of the test's, so its metrics folder can be read."""
    root = tmp_path_factory.mktemp("metrics-workers")
    tmp = root / "tmp"
    tmp.mkdir()
    process = role_factory("torch", root / "repository", "server", SERVER_WORKERS="2", TMPDIR=str(tmp))
    folders = list(tmp.glob("servekit-metrics-*"))
    assert len(folders) == 1, folders  # made by the master before the workers started
    process.metrics_dir, process.tmp = folders[0], tmp
    yield process
    process.stop()


def test_every_scrape_reports_the_sum_over_both_workers(server):
    for _ in range(CALLS):
        assert requests.get(server.url + "/models", timeout=10).status_code == 200
    for scraped_before in range(SCRAPES):
        seen = scrape(server)
        assert seen[MODELS] == CALLS
        assert seen.get(SCRAPED, 0) == scraped_before  # a scrape is counted once its answer is rendered
        assert seen[IN_FLIGHT] == 1  # this scrape, summed over the live workers

    # Both workers took part, and neither alone has the total that every scrape reported.
    pids = sorted(int(path.stem.split("_")[1]) for path in server.metrics_dir.glob("counter_*.db"))
    assert len(pids) == 2, pids
    per_worker = [worker_counts(server.metrics_dir, pid) for pid in pids]
    assert all(0 < counts.get(MODELS, 0) < CALLS for counts in per_worker), per_worker
    assert sum(counts[MODELS] for counts in per_worker) == CALLS
    assert all(counts.get(SCRAPED, 0) > 0 for counts in per_worker)  # each worker answered some scrapes


def test_a_dead_workers_counts_stay_and_its_live_gauges_go(server):
    master = psutil.Process(server.process.pid)
    victim = master.children()[0].pid
    live_gauges = server.metrics_dir / f"gauge_livesum_{victim}.db"
    assert live_gauges.exists()
    before = scrape(server)
    psutil.Process(victim).send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (live_gauges.exists() or not new_worker_started(master, victim, server)):
        time.sleep(0.2)
    assert not live_gauges.exists(), "the master did not mark the dead worker's gauges dead"
    assert (server.metrics_dir / f"counter_{victim}.db").exists()
    assert new_worker_started(master, victim, server), "gunicorn did not start a new worker"
    for scraped in range(1, 6):
        seen = scrape(server, timeout=120)  # the new worker may still be importing torch
        assert seen[MODELS] == CALLS  # the dead worker's share is still counted
        assert seen[SCRAPED] == before[SCRAPED] + scraped
        assert seen[IN_FLIGHT] == 1


def test_the_metrics_folder_goes_with_the_server(server):
    server.stop()
    assert not server.metrics_dir.exists()
    assert not list(server.tmp.glob("servekit-metrics-*"))
