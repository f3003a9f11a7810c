# gunicorn -c gateway/gunicorn.conf.py gateway.wsgi:app  (from the repository root)
# One worker as in the services (servekit/gunicorn_settings.py): the active training run lives in
# that process. More threads than a service: each fan-out request waits on several services at once.
from servekit.gunicorn_settings import *  # noqa: F403

threads = 16
