"""An OpenAPI 3 document generated from the Flask app itself.

Paths and methods come from the URL map, summaries from the view docstrings,
request bodies and success statuses from the ``documented`` decorator, so the
document cannot drift from the routes.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "what went wrong and what to do"}},
}
ERROR_STATUSES = {
    "400": "bad input (malformed, too deep, wrong types, unknown fields, out of range)",
    "401": "a token is needed: Authorization: Bearer <token>",
    "403": "wrong token, or a cross-site request",
    "404": "unknown model, job or path",
    "409": "a training job (or benchmark) is already running, or the wrong role",
    "413": "upload too large",
    "415": "unsupported media type",
    "422": "no digit found in the image",
    "429": "too many requests (rate limit or busy evaluations); see Retry-After",
    "502": "no service answered (gateway)",
    "503": "model not trained or data not loaded",
}


def documented(request_body: dict | None = None, response: dict | None = None, status: int = 200,
               content: str = "application/json") -> Callable:
    """Attach request body schemas (media type -> schema), the response schema and success status to a view."""

    def mark(view: Callable) -> Callable:
        view.openapi = {"request_body": request_body, "response": response, "status": status, "content": content}
        return view

    return mark


def build_openapi(app: Flask, title: str, version: str) -> dict:
    """The OpenAPI 3.0 document of every route of ``app``."""
    paths: dict[str, dict] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        path = rule.rule.replace("<", "{").replace(">", "}")
        for converter in ("int:", "string:", "path:"):
            path = path.replace("{" + converter, "{")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = _operation(view, rule, method)
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": {"Error": ERROR_SCHEMA}},
    }


def _operation(view: Callable, rule, method: str) -> dict:
    doc = (view.__doc__ or "").strip()
    meta = getattr(view, "openapi", {}) or {}
    status = str(meta.get("status", 200))
    content = meta.get("content", "application/json")
    operation = {
        "operationId": f"{method.lower()}_{rule.endpoint.replace('.', '_')}",
        "summary": doc.splitlines()[0] if doc else rule.endpoint,
        "responses": {status: {"description": "success", "content": {content: {"schema": meta.get("response") or {}}}}},
    }
    if rule.arguments:
        operation["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in sorted(rule.arguments)
        ]
    if meta.get("request_body") and method in ("POST", "PUT"):
        operation["requestBody"] = {"content": {media: {"schema": s} for media, s in meta["request_body"].items()}}
    for code, description in ERROR_STATUSES.items():
        operation["responses"][code] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return operation
