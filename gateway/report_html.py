"""The report as one self-contained HTML page (templates/report.html.j2): inline CSS, every image a data: URL,
no script and nothing to fetch, so that it reads offline, prints, and shows under the strictest policy
(``REPORT_CSP``). Every text is escaped (Jinja2's autoescape)."""

from __future__ import annotations

import base64
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from .report_document import Document
from .report_format import when

REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
TEMPLATES = Path(__file__).parent / "templates"

_environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                           trim_blocks=False, lstrip_blocks=False)
_environment.filters["data_url"] = lambda png: "data:image/png;base64," + base64.b64encode(png).decode("ascii")
_environment.filters["kind"] = lambda block: type(block).__name__
_environment.filters["when"] = when


def render_html(document: Document) -> str:
    """The document as an HTML page."""
    return _environment.get_template("report.html.j2").render(document=document)
