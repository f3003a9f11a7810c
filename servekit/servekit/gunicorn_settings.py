"""gunicorn settings shared by every service (each service's gunicorn.conf.py imports them).

One worker process: the model lives in that process's memory, and a training
job runs in a background thread of the same process, so that it can swap the
newly trained model in for the requests that follow. Several workers would
each hold (and train) their own copy. Threads (gthread) let /predict, /train
status and /metrics answer while a training job keeps a core busy.
"""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = 1
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 120  # an evaluation of the whole test set may hold a request for a while
graceful_timeout = 20
accesslog = None  # each app logs its own JSON access line, with the request id (servekit.observability)
