"""Bearer-token authentication for what changes state (train, cancel, evaluate, benchmark, promote).

Jupyter-style, so that a newcomer still gets a working page: the token comes from ``API_TOKEN`` or a
secret file (``API_TOKEN_FILE``, for Docker and Kubernetes secrets); without either, one is generated
(kept in ``token_file`` when given, so a restart does not log the page out) and the caller prints the
URL that carries it. A token the operator supplied is never printed (``Auth.supplied_by`` says where it
is). ``AUTH=off`` turns the check off, with a warning in the log.

Reading stays open: GETs, health, metrics, the page, and predictions (``/predict``, ``/v2`` inference)
unless ``PROTECT_PREDICT=1``. 401 without a token, 403 with a wrong one; compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, request

from .errors import ApiError

log = logging.getLogger(__name__)

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True)
class Auth:
    """Whether requests must carry a token, which one, and whether predictions need it too."""

    enabled: bool
    token: str | None = None
    protect_predict: bool = False
    generated: bool = False  # made up at start: the caller should tell the user
    supplied_by: str | None = None  # the operator's setting that holds it ("API_TOKEN"): never to be printed


def inference(view: Callable) -> Callable:
    """Mark a view that answers predictions: open unless PROTECT_PREDICT=1."""
    view.inference = True
    return view


def load_auth(env: Mapping[str, str] = os.environ, token_file: Path | None = None, prefix: str = "API") -> Auth:
    """The Auth the environment asks for: ``<prefix>_TOKEN``, ``<prefix>_TOKEN_FILE``, else a generated token."""
    protect_predict = env.get("PROTECT_PREDICT", "0").strip().lower() in ("1", "true", "yes", "on")
    if env.get("AUTH", "on").strip().lower() in ("off", "0", "false", "no"):
        log.warning("AUTH=off: anyone who reaches this service can train, evaluate and replace its models")
        return Auth(enabled=False)
    token = read_token(env, prefix)
    if token:
        return Auth(True, token, protect_predict, supplied_by=token_setting(env, prefix))
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError:
            token = None
    generated = not token
    if generated:
        token = secrets.token_urlsafe(24)
        if token_file is not None:
            _write_private(token_file, token)
    return Auth(True, token, protect_predict, generated=generated)


def read_token(env: Mapping[str, str], prefix: str) -> str | None:
    """``<prefix>_TOKEN``, or the contents of the file ``<prefix>_TOKEN_FILE`` names (an error if unreadable)."""
    if env.get(f"{prefix}_TOKEN", "").strip():
        return env[f"{prefix}_TOKEN"].strip()
    path = env.get(f"{prefix}_TOKEN_FILE", "").strip()
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise RuntimeError(f"{prefix}_TOKEN_FILE {path} cannot be read: {exc}") from exc
    if not token:
        raise RuntimeError(f"{prefix}_TOKEN_FILE {path} is empty")
    return token


def token_setting(env: Mapping[str, str], prefix: str) -> str:
    """Which setting ``read_token`` takes the token from, for a log line: ``API_TOKEN`` or ``API_TOKEN_FILE (path)``."""
    if env.get(f"{prefix}_TOKEN", "").strip():
        return f"{prefix}_TOKEN"
    return f"{prefix}_TOKEN_FILE ({env.get(f'{prefix}_TOKEN_FILE', '').strip()})"


def install_auth(app: Flask, auth: Auth) -> None:
    """Require ``Authorization: Bearer <token>`` on state-changing requests (and predictions if protected)."""
    if not auth.enabled:
        return
    expected = auth.token.encode()

    @app.before_request
    def check_token():
        if request.method not in UNSAFE_METHODS:
            return
        view = app.view_functions.get(request.endpoint) if request.endpoint else None
        if view is None or (getattr(view, "inference", False) and not auth.protect_predict):
            return
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError("this needs a token: send Authorization: Bearer <token> (the gateway prints a page URL "
                           "carrying it at start; API_TOKEN sets it)", 401, headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), expected):
            raise ApiError("the token is not valid for this service", 403)


def _write_private(path: Path, token: str) -> None:
    """Write the token readable by this user only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token)
    os.replace(tmp, path)
