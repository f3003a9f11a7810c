# gunicorn -c gunicorn.conf.py app:app  (why one worker with threads: servekit/gunicorn_settings.py)
from servekit.gunicorn_settings import *  # noqa: F403
