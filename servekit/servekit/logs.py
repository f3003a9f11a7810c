"""Structured (JSON) logs with the request id, shared by the services and the gateway."""

from __future__ import annotations

import logging
import os

from pythonjsonlogger.json import JsonFormatter


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record logged while a Flask request is being handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            try:
                from flask import g, has_request_context

                record.request_id = g.get("request_id") if has_request_context() else None
            except ImportError:
                record.request_id = None
        return True


def configure_logging() -> None:
    """One JSON object per line on stderr (LOG_FORMAT=text for plain lines), at LOG_LEVEL (INFO)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if os.environ.get("LOG_FORMAT", "json") == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    else:
        handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}{request_id}", style="{",
                                           rename_fields={"asctime": "time", "levelname": "level"}))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
