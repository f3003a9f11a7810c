"""The gateway's WSGI entry point: ``gunicorn -c gateway/gunicorn.conf.py gateway.wsgi:app``."""

from servekit.logs import configure_logging

from .app import create_gateway_app

configure_logging()
app = create_gateway_app()
