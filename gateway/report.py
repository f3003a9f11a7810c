"""The gateway's report (GET /report, GET /report.md): the latest comparison as one document.

``Reports`` ties the parts together: a snapshot of everything the report shows (report_data), the figures
drawn from it (report_figures, kept per state), the document tree (report_document) and its two writings,
HTML (report_html) and Markdown (report_markdown).
"""

from __future__ import annotations

from .report_data import ReportData
from .report_document import Document, build_document, model_histories, reference_layers, rows_of
from .report_figures import ReportFigures, figure_inputs
from .report_html import REPORT_CSP, render_html
from .report_markdown import markdown_zip, render_markdown

__all__ = ["REPORT_CSP", "Reports"]


class Reports:
    """The report of the gateway's current state, as HTML, Markdown, or a zip of Markdown and images."""

    def __init__(self, data: ReportData, figures: ReportFigures | None = None):
        self.data = data
        self.figures = figures or ReportFigures()

    def document(self) -> Document:
        """The document of now: a fresh snapshot, figures drawn only for a state not drawn before."""
        snapshot = self.data.snapshot()
        inputs = figure_inputs(rows_of(snapshot), model_histories(snapshot), reference_layers(snapshot))
        return build_document(snapshot, self.figures.get(inputs))

    def html(self) -> tuple[str, bool]:
        """The HTML page, and whether every part of it arrived."""
        document = self.document()
        return render_html(document), document.complete

    def markdown(self) -> tuple[str, bool]:
        """The Markdown with its images inline (data: URLs), and whether every part arrived."""
        document = self.document()
        return render_markdown(document, inline_images=True)[0], document.complete

    def markdown_zip(self) -> tuple[bytes, bool]:
        """A zip of report.md and images/*.png, and whether every part arrived."""
        document = self.document()
        return markdown_zip(document), document.complete
