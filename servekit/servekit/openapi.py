"""An OpenAPI 3 document generated from the Flask app itself.

Paths, methods and path parameters come from the URL map, summaries from the view docstrings, request
bodies and success statuses from the ``documented`` decorator. Error statuses follow from the checks the
app runs on every route (Host, token, cross-site, media type, body size, rate limit, unknown path
parameters) and from ``ROUTES`` in the ``schemas`` module of the view's package (servekit.schemas,
gateway.schemas): the statuses only that view answers, its query parameters, and the bodies of views
that are not ``documented``. So the document cannot drift from the routes, and a schema fuzzer can hold
the app to it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from flask import Flask

from .auth import UNSAFE_METHODS
from .limits import RATE_LIMITED_ENDPOINTS
from .web_security import PROBE_PATHS

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "what went wrong and what to do"}},
}
ERROR_STATUSES = {
    400: "bad input (malformed, too deep, wrong types, unknown fields, out of range)",
    401: "a token is needed: Authorization: Bearer <token>",
    403: "wrong token, or a cross-site request",
    413: "body too large",
    415: "unsupported media type: send JSON with Content-Type: application/json",
    429: "too many requests from this client (RATE_LIMIT); see Retry-After",
}
HOST_REFUSED = "a Host header not in ALLOWED_HOSTS"
PATH_ARGUMENT = re.compile(r"<(?:(\w+):)?(\w+)>")  # Flask's <converter:name>
BEARER = "bearerAuth"
MODEL_NAME = {"$ref": "#/components/schemas/ModelName"}
OPTIONAL_MODEL_NAME = {"$ref": "#/components/schemas/OptionalModelName"}  # null: every model
UNREAD_BODY = {"description": "not read; {} will do (but a POST must say Content-Type: application/json)"}


@dataclass(frozen=True)
class Route:
    """What the document says about a view beyond what every route of its method and path gets."""

    request_body: dict | None = None  # media type -> schema
    response: dict | None = None  # the success body's schema
    status: int | None = 200  # the success status; None when the view never succeeds (a route of another role)
    content: str = "application/json"  # the success body's media type
    query: dict[str, dict] = field(default_factory=dict)  # query parameter -> its fields ("schema", "required")
    errors: dict[int, str] = field(default_factory=dict)  # status -> why, answered with the Error body
    responses: dict[int, dict] = field(default_factory=dict)  # other statuses with their own body schema


def documented(request_body: dict | None = None, response: dict | None = None, status: int = 200,
               content: str = "application/json") -> Callable:
    """Attach request body schemas (media type -> schema), the response schema and success status to a view."""

    def mark(view: Callable) -> Callable:
        view.openapi = Route(request_body, response, status, content)
        return view

    return mark


def build_openapi(app: Flask, title: str, version: str) -> dict:
    """The OpenAPI 3.0 document of every route of ``app``."""
    paths: dict[str, dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        path = PATH_ARGUMENT.sub(r"{\2}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(view, rule, method)
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA, **_model_name_schemas(app)},
            "securitySchemes": {BEARER: {"type": "http", "scheme": "bearer"}},
        },
    }


def _model_name_schemas(app: Flask) -> dict:
    """ModelName: one of a service's models; any name at the gateway, which learns them from the services."""
    service = app.extensions.get("model_service")
    if service is None:
        return {"ModelName": {"type": "string", "minLength": 1},
                "OptionalModelName": {"type": "string", "minLength": 1, "nullable": True}}
    names = list(service.models)
    return {"ModelName": {"type": "string", "enum": names},
            "OptionalModelName": {"type": "string", "enum": [*names, None], "nullable": True}}


def _route(view: Callable) -> Route:
    """The view's Route: its package's ``schemas.ROUTES`` entry (keyed by the view function's name), whose
    query, errors and responses complete what ``documented`` says when the view is documented."""
    package = view.__module__.rpartition(".")[0]
    listed = getattr(importlib.import_module(f"{package}.schemas"), "ROUTES", {}).get(view.__name__)
    own = getattr(view, "openapi", None)
    if own is None or listed is None:
        return own or listed or Route()
    return replace(own, query=listed.query, errors=listed.errors, responses=listed.responses)


def _operation(view: Callable, rule, method: str) -> dict:
    doc = (view.__doc__ or "").strip()
    route = _route(view)
    operation = {
        "operationId": f"{method.lower()}_{re.sub(r'[^A-Za-z0-9]+', '_', rule.endpoint)}",
        "summary": doc.splitlines()[0] if doc else rule.endpoint,
        "responses": {},
    }
    parameters = [_path_parameter(name, converter) for converter, name in PATH_ARGUMENT.findall(rule.rule)]
    parameters += [{"name": name, "in": "query", "required": False, **fields} for name, fields in route.query.items()]
    if parameters:
        operation["parameters"] = parameters
    reads_body = route.request_body is not None and method in ("POST", "PUT")
    if reads_body:
        operation["requestBody"] = {"required": True,
                                    "content": {media: {"schema": s} for media, s in route.request_body.items()}}
    elif method == "POST" and not getattr(view, "accepts_any_media_type", False):
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": UNREAD_BODY}}}
    if method in UNSAFE_METHODS:
        # Predictions need the token only with PROTECT_PREDICT=1.
        operation["security"] = [{}, {BEARER: []}] if getattr(view, "inference", False) else [{BEARER: []}]
    if route.status is not None:
        operation["responses"][str(route.status)] = {
            "description": "success", "content": {route.content: {"schema": route.response or {}}}}
    for status, description in sorted(_errors(view, rule, method, reads_body, route).items()):
        operation["responses"][str(status)] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    for status, schema in route.responses.items():
        operation["responses"][str(status)] = {"description": "see the body",
                                               "content": {"application/json": {"schema": schema}}}
    return operation


def _path_parameter(name: str, converter: str) -> dict:
    if converter == "int":
        schema = {"type": "integer", "minimum": 0}
    elif name == "name":  # every <name> of both apps is a model's
        schema = MODEL_NAME
    else:
        schema = {"type": "string", "minLength": 1}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _errors(view: Callable, rule, method: str, reads_body: bool, route: Route) -> dict[int, str]:
    """Status -> why, for every error status the route can answer with the Error body."""
    errors: dict[int, str] = {}
    if rule.rule not in PROBE_PATHS:  # web_security: probes answer whatever the Host
        errors[400] = HOST_REFUSED
    if reads_body:
        errors[400] = f"{ERROR_STATUSES[400]}; or {HOST_REFUSED}"
        errors[413] = ERROR_STATUSES[413]
    if method in UNSAFE_METHODS:  # auth and web_security
        errors[401] = ERROR_STATUSES[401]
        errors[403] = ERROR_STATUSES[403]
    if rule.arguments:
        errors[404] = f"unknown {' or '.join(sorted(rule.arguments))}"
    if method == "POST" and not getattr(view, "accepts_any_media_type", False):
        errors[415] = ERROR_STATUSES[415]
    if rule.endpoint in RATE_LIMITED_ENDPOINTS:
        errors[429] = ERROR_STATUSES[429]
    for status, why in route.errors.items():
        errors[status] = f"{errors[status]}; or {why}" if status in errors else why
    return errors
