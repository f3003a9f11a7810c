"""gunicorn settings shared by every service (each service's gunicorn.conf.py imports them).

A trainer (or ``ROLE=all``) runs one worker: its training job runs in a
background thread of that process and the job's status lives in its memory.
A server runs ``SERVER_WORKERS`` workers; each loads the promoted version from
the model repository and watches it on its own, so workers need no shared
memory. Threads (gthread) let /predict, /train status and /metrics answer
while a training job keeps a core busy.
"""

import glob
import itertools
import logging
import os
import shutil
import sys
import tempfile

from servekit.settings import WORKER_INDEX_ENV, server_workers

# A server's OpenMP threads that finish a parallel region sleep instead of spinning for the next one. Spinning
# made a one-image torch call cost 5-10x the CPU with two intra-op threads on a busy two-core machine (measured
# with a profile of /predict: torch.conv2d 10 ms instead of 0.1 ms). A trainer's threads spin: a training step
# runs parallel region after parallel region, and waking sleeping threads for each made a torch epoch 12-30%
# slower (scripts/bench_training.py). Read by libgomp when torch loads, in the workers.
if os.environ.get("ROLE", "all").strip().lower() != "trainer":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Loopback unless told otherwise (`make run` stays off the LAN); the images set HOST=0.0.0.0 inside.
bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = server_workers()
# Each worker of a multi-worker server listens on its own SO_REUSEPORT socket, so that the kernel spreads new
# connections over the workers. On one shared socket, whichever worker woke first took a whole burst of
# keep-alive connections: one run in three of 16 connections left one worker serving most of them on one core
# while the other idled (370 instead of 1,100-1,200 req/s). Not for one worker: a second `make run` would then
# share the port silently instead of failing with "address in use".
reuse_port = workers > 1
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 120  # an evaluation of the whole test set may hold a request for a while
# SIGTERM or SIGINT: requests in flight get this long, then gunicorn kills the worker. Every process of the
# stack must be gone within 5 s of a stop (Ctrl-C of `make run`, `docker stop` well inside its 30 s grace);
# an evaluation cut short by a stop is asked again by its client.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT_S", "3"))
JOB_STOP_WAIT_S = 0.5  # for the training job to reach its next step and end, writing nothing


def worker_exit(server, worker):
    """In a worker on its way out: cancel its training job, so that a stop never leaves a version behind
    that nobody asked for and the job reads "cancelled" (its thread is a daemon and dies with the worker);
    then leave at once.

    The worker's requests are over by now (gunicorn waited for them); what is left is the interpreter's own
    finalization, where TensorFlow's, XLA's and OpenMP's thread pools took seconds or aborted ("terminate called
    without an active exception"), so that gunicorn had to kill the worker after its graceful timeout.
    """
    from servekit.jobs import stop_all_jobs

    for job in stop_all_jobs("cancelled: the service stopped", JOB_STOP_WAIT_S):
        server.log.info("training job %s cancelled: the service stopped (%s)", job.job_id, job.status)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
accesslog = None  # each app logs its own JSON access line, with the request id (servekit.observability)

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
_made_metrics_dir: list[str] = []  # the folder on_starting made, removed on_exit


def on_starting(server):
    """In the master, before any worker forks: the folder every worker writes its metrics to (servekit.metrics).

    PROMETHEUS_MULTIPROC_DIR when set (its old files are removed: counts start at zero with the server), else a
    fresh folder in the temporary directory (TMPDIR, else /tmp: a tmpfs in the containers), removed at exit.
    It must be in the environment before the workers import prometheus_client, which reads it once.
    """
    folder = os.environ.get(METRICS_DIR_ENV)
    if folder:
        os.makedirs(folder, exist_ok=True)
        for stale in glob.glob(os.path.join(folder, "*.db")):
            os.remove(stale)
    else:
        folder = tempfile.mkdtemp(prefix="servekit-metrics-")
        _made_metrics_dir.append(folder)
        os.environ[METRICS_DIR_ENV] = folder
    server.log.info("workers share their metrics in %s", folder)


def pre_fork(server, worker):
    """In the master, before a worker forks: the lowest index (0, 1, ...) that no live worker has, so that each
    worker can take its own share of the CPUs (services/jax/threads.py); a replacement takes its predecessor's."""
    taken = {getattr(live, "index", None) for live in server.WORKERS.values()}
    worker.index = next(index for index in itertools.count() if index not in taken)


def post_fork(server, worker):
    """In the new worker, before it imports the app: its index, in the environment as GUNICORN_WORKER_INDEX."""
    os.environ[WORKER_INDEX_ENV] = str(worker.index)


def child_exit(server, worker):
    """In the master, once a worker has exited: drop its live gauges (in-flight requests...); its counts stay."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """In the master, last: remove the metrics folder it made."""
    for folder in _made_metrics_dir:
        shutil.rmtree(folder, ignore_errors=True)
