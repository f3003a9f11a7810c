"""The code that defines a model, read from the running process's own modules (``GET /source``).

A backend class declares its two parts as class attributes:

- ``network_source``: what defines the network;
- ``train_step_source``: the training step, with the loop around it where that is where the framework's style
  shows (a hand-written loop; Keras' ``compile`` + ``fit``).

Each is a class or function (a method too), or a tuple of several that lie next to each other in one file, with
nothing but blank lines and comments between them (helpers with what uses them). ``inspect`` reads them from the
files their modules were loaded from, so what a service shows is the code it runs.

A part is one block of one file: ``file`` (its path in the repository), ``qualname`` (the objects' qualified names,
comma-separated; also ``qualnames``, a list), ``first_line`` and ``last_line`` (1-based, inclusive; decorators
included), ``code`` (exactly those lines of the file) and ``lines`` (``code_lines``: the lines that hold code).
"""

from __future__ import annotations

import ast
import inspect
import io
import logging
import tokenize
from pathlib import Path

log = logging.getLogger(__name__)

PARTS = {"network": "network_source", "train_step": "train_step_source"}  # part -> the backend's attribute
NOT_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def model_source(backend_class: type) -> dict[str, dict | None]:
    """Part -> its block (``source_block``); None for a part the backend class does not declare, or whose file
    cannot be read (a process running without its .py files)."""
    found = {}
    for part, attribute in PARTS.items():
        declared = getattr(backend_class, attribute, None)
        try:
            found[part] = source_block(declared) if declared is not None else None
        except OSError as exc:
            log.warning("no source for %s's %s: %s", backend_class.__name__, part, exc)
            found[part] = None
    return found


def source_block(objects) -> dict:
    """One object's source, or several adjacent objects' as one block from the first one's first line to the last
    one's last line (in file order); ValueError when they are in different files or something lies between them."""
    objects = [inspect.unwrap(o) for o in (objects if isinstance(objects, tuple) else (objects,))]
    spans = sorted((_span(o) for o in objects), key=lambda span: span[1])
    files = {file for file, _, _, _ in spans}
    if len(files) != 1:
        raise ValueError(f"the parts of one block must be in one file, not in {sorted(files)}")
    file = spans[0][0]
    file_lines, _ = inspect.findsource(objects[0])
    for (_, _, end, name), (_, start, _, following) in zip(spans, spans[1:], strict=False):
        if start <= end or _holds_code("".join(file_lines[end:start - 1])):
            raise ValueError(f"{name} and {following} are not next to each other in {file}")
    first, last = spans[0][1], max(span[2] for span in spans)
    code = "".join(file_lines[first - 1:last])
    qualnames = [name for _, _, _, name in spans]
    module = inspect.getmodule(objects[0])
    return {"file": repository_path(module.__name__ if module else "", file), "qualname": ", ".join(qualnames),
            "qualnames": qualnames, "first_line": first, "last_line": last, "lines": code_lines(code), "code": code}


def _span(obj) -> tuple[str, int, int, str]:
    """(source file, first line, last line, qualified name) of a class or function."""
    lines, first = inspect.getsourcelines(obj)
    return inspect.getsourcefile(obj), first, first + len(lines) - 1, obj.__qualname__


def repository_path(module_name: str, file: str) -> str:
    """The file's path in the repository, the same in a checkout as in a service's image: a servekit module's from
    its name (the package may be installed anywhere), another's from its place under ``services/`` (``/app/services/
    <name>`` in the image); else the file's name alone."""
    path = Path(file)
    if module_name.split(".")[0] == "servekit":
        packages = module_name.split(".") if path.name == "__init__.py" else module_name.split(".")[:-1]
        return "/".join(["servekit", *packages, path.name])
    parts = Path(file).resolve().parts
    if "services" in parts:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("services"):])
    return path.name


def code_lines(code: str) -> int:
    """The lines of ``code`` that hold code: blank lines, comment-only lines and docstrings are not counted (they
    explain the code; a reader comparing frameworks counts what each needs to run). A line holding a statement
    and a comment counts; every line of a multi-line statement or of a string that is not a docstring counts."""
    docstrings = _docstring_lines(code)
    counted: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type in NOT_CODE:
            continue
        lines = range(token.start[0], token.end[0] + 1)
        if token.type == tokenize.STRING and all(line in docstrings for line in lines):
            continue
        counted.update(lines)
    return len(counted)


def _holds_code(text: str) -> bool:
    """Whether ``text`` holds anything but blank lines and comments (what does not tokenize counts as code)."""
    try:
        return any(token.type not in NOT_CODE for token in tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return True


def _docstring_lines(code: str) -> set[int]:
    """The lines of the docstrings of ``code``'s classes and functions (and module); none when it does not parse.
    An indented block (a method) is parsed inside an ``if``: its line numbers are then one more than in ``code``."""
    indented = code[:1].isspace()
    shift = 1 if indented else 0
    try:
        tree = ast.parse("if 1:\n" + code if indented else code)
    except SyntaxError:
        return set()
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                lines.update(range(first.lineno - shift, first.end_lineno - shift + 1))
    return lines
