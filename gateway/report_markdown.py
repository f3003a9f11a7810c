"""The report as Markdown, for READMEs and blogs: the same sections, headings and numbers as the HTML.

Tables are GitHub-flavoured pipe tables (CommonMark alone shows them as text; the headings are the same);
code is fenced. Images are files (``images/<id>.png``, sent in a zip with ``report.md``) or, when asked,
``data:`` URLs inline, so that the single file stands alone.
"""

from __future__ import annotations

import base64
import io
import re
import zipfile

from .report_document import (
    Cell,
    Code,
    CodePair,
    Document,
    Gallery,
    Image,
    ImageGrid,
    Paragraph,
    Section,
    Table,
)
from .report_format import when

SPECIAL = re.compile(r"([\\`*_\[\]<>|&])")
BLOCK_START = re.compile(r"^(#{1,6}|[-+=])(\s|$)")  # a heading, list item or underline were the text to start so
ORDERED_ITEM = re.compile(r"^(\d{1,9})([.)])(\s|$)")  # "1. " would start a numbered list


def render_markdown(document: Document, inline_images: bool = False) -> tuple[str, dict[str, bytes]]:
    """The Markdown text, and the image files it refers to (name -> PNG bytes; none when ``inline_images``)."""
    writer = _Writer(inline_images)
    writer.line(f"# {escape(document.title)}")
    writer.line()
    note = "" if document.complete else " (some parts were still being computed: see the notes)"
    writer.paragraph(f"Generated {when(document.generated_at)}{note}.")
    for section in document.sections:
        writer.section(section)
    return writer.text(), writer.files


def markdown_zip(document: Document) -> bytes:
    """A zip of ``report.md`` and its ``images/*.png``."""
    text, files = render_markdown(document)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("report.md", text)
        for name, png in files.items():
            archive.writestr(name, png, compress_type=zipfile.ZIP_STORED)  # PNG is compressed already
    return buffer.getvalue()


def escape(text: str) -> str:
    """Plain text that Markdown shows as written, inline (in a table cell, a caption): its markup escaped."""
    return SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def escape_block(text: str) -> str:
    """Plain text that Markdown shows as written at the start of a line (a paragraph)."""
    text = BLOCK_START.sub(r"\\\1\2", escape(text))
    return ORDERED_ITEM.sub(r"\1\\\2\3", text)


class _Writer:
    def __init__(self, inline_images: bool):
        self.inline_images = inline_images
        self.files: dict[str, bytes] = {}
        self.lines: list[str] = []

    def text(self) -> str:
        return "\n".join(self.lines).rstrip() + "\n"

    def line(self, text: str = "") -> None:
        self.lines.append(text)

    def paragraph(self, text: str, kind: str = "") -> None:
        self.line(("> " if kind else "") + escape_block(text))
        self.line()

    def section(self, section: Section) -> None:
        self.line(f"{'#' * section.level} {escape(section.title)}")
        self.line()
        for block in section.blocks:
            self.block(block)

    def block(self, block) -> None:
        if isinstance(block, Section):
            self.section(block)
        elif isinstance(block, Paragraph):
            self.paragraph(block.text, block.kind)
        elif isinstance(block, Table):
            self.table(block)
        elif isinstance(block, Image):
            self.image(block)
        elif isinstance(block, ImageGrid):
            for item in block.items:
                self.block(item)
        elif isinstance(block, CodePair):
            for item in block.items:
                if isinstance(item, Code):
                    self.code(item)
                else:
                    self.paragraph(item.text, item.kind)
        elif isinstance(block, Gallery):
            self.gallery(block)

    def table(self, table: Table) -> None:
        self.line(f"**{escape(table.caption)}**")
        self.line()
        self.line("| " + " | ".join(escape(h) or " " for h in table.header) + " |")
        numeric = [any(len(row) > i and row[i].numeric for row in table.rows) for i in range(len(table.header))]
        self.line("|" + "|".join(" ---: " if n else " --- " for n in numeric) + "|")
        for row in table.rows:
            self.line("| " + " | ".join(_cell(cell) for cell in row) + " |")
        self.line()

    def image_target(self, image: Image) -> str:
        if self.inline_images:
            return "data:image/png;base64," + base64.b64encode(image.png).decode("ascii")
        name = f"images/{image.id}.png"
        self.files[name] = image.png
        return name

    def image(self, image: Image) -> None:
        self.line(f"![{escape(image.alt)}]({self.image_target(image)})")
        self.line()
        if image.caption:
            self.paragraph(image.caption)

    def code(self, code: Code) -> None:
        self.line(f"**{escape(code.title)}**: {escape(code.caption)}")
        self.line()
        longest = max((len(run) for run in re.findall(r"`+", code.text)), default=0)
        fence = "`" * max(3, longest + 1)
        self.line(f"{fence}python")
        self.lines.extend(code.text.rstrip("\n").split("\n"))
        self.line(fence)
        self.line()

    def gallery(self, gallery: Gallery) -> None:
        self.line("| digit | test image | answers |")
        self.line("| --- | --- | --- |")
        for item in gallery.items:
            picture = f"![{escape(item.image.alt)}]({self.image_target(item.image)})" if item.image else "no image"
            self.line(f"| {picture} | {escape(item.title)} | {escape('; '.join(item.lines))} |")
        self.line()


def _cell(cell: Cell) -> str:
    return escape(cell.text) or " "
