import os
import subprocess
import sys

from servekit.metrics import GatewayMetrics, bounded_path


def test_backend_call_paths_become_bounded_labels():
    assert bounded_path("/train/3f2a9c1b7d4e?x=1") == "/train/<job_id>"
    assert bounded_path("/models/torch/versions/12/promote") == "/models/torch/versions/<version>/promote"
    assert bounded_path("/predict?model=torch") == "/predict"
    metrics = GatewayMetrics()
    for job in ("a" * 12, "b" * 12, "c" * 12):
        metrics.observe_backend_call("torch", f"/train/{job}", 0.01, True)
    text = metrics.render().decode()
    assert text.count('path="/train/<job_id>"') >= 1 and "aaaaaaaaaaaa" not in text


MULTIPROCESS = """
import os
from prometheus_client import multiprocess
from servekit.metrics import ServiceMetrics

metrics = ServiceMetrics()
child = os.fork()
if child == 0:  # a worker: three requests, one still in flight, version 4 installed
    metrics.requests.labels("/models", "GET", "200").inc(3)
    metrics.in_flight.inc()
    metrics.model_version.labels("torch").set(4)
    os._exit(0)
os.waitpid(child, 0)
metrics.requests.labels("/models", "GET", "200").inc(2)  # the other worker, which answers the scrape
metrics.model_version.labels("torch").set(5)
print(metrics.render().decode())
print("---")
multiprocess.mark_process_dead(child)  # what gunicorn's child_exit hook does
print(metrics.render().decode())
"""


def test_workers_metrics_are_combined_by_kind(tmp_path):
    """Under gunicorn every worker's files are read: counters add up, the most recent version wins, and the
    in-flight requests of a worker that has exited no longer count."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    output = subprocess.run([sys.executable, "-c", MULTIPROCESS], env=env, capture_output=True, text=True,
                            timeout=60, check=True).stdout
    alive, after_exit = output.split("---")
    assert 'http_requests_total{endpoint="/models",method="GET",status="200"} 5.0' in alive
    assert 'model_version{model="torch"} 5.0' in alive
    assert "http_requests_in_flight 1.0" in alive
    assert 'http_requests_total{endpoint="/models",method="GET",status="200"} 5.0' in after_exit
    assert "http_requests_in_flight 0.0" in after_exit


def test_without_gunicorn_the_registry_is_in_memory():
    metrics = GatewayMetrics()
    assert metrics.shared_dir is None
    metrics.in_flight.inc()
    assert "http_requests_in_flight 1.0" in metrics.render().decode()
