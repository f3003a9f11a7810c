"""gunicorn settings shared by every service (each service's gunicorn.conf.py imports them).

A trainer (or ``ROLE=all``) runs one worker: its training job runs in a
background thread of that process and the job's status lives in its memory.
A server runs ``SERVER_WORKERS`` workers; each loads the promoted version from
the model repository and watches it on its own, so workers need no shared
memory. Threads (gthread) let /predict, /train status and /metrics answer
while a training job keeps a core busy.
"""

import os

from servekit.settings import server_workers

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
graceful_timeout = 20
accesslog = None  # each app logs its own JSON access line, with the request id (servekit.observability)
