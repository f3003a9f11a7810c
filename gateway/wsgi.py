"""The gateway's WSGI app, served by ``python -m gateway.serve`` (waitress; why: gateway/serve.py)."""

from servekit.logs import configure_logging

from .app import create_gateway_app

configure_logging()
app = create_gateway_app()
