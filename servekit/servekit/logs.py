"""Logging set-up shared by the services and the gateway."""

import logging
import os


def configure_logging() -> None:
    """Log to stderr at LOG_LEVEL (default INFO), once per process."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
