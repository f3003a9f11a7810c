"""servekit.source: a model's parts read from a real module's file, and the lines counted in them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import servekit.machine
from servekit.source import code_lines, model_source, repository_path, source_block

REPOSITORY = Path(__file__).resolve().parents[2]

DEMO = '''\
"""A backend module as a service has one."""

import functools


def helper(x):
    """Doubles."""
    return 2 * x  # twice


# nothing but comments between helper and Net

class Net:
    """The network."""

    def __init__(self):
        self.scale = helper(3)

    def forward(self, x):
        return x * self.scale


def traced(function):
    @functools.wraps(function)
    def wrapper(*args):
        return function(*args)
    return wrapper


@traced
def step(net, x):
    """One step."""
    y = net.forward(x)
{extra}
    return y


class DemoBackend:
    name = "demo"
    network_source = (Net, helper)
    train_step_source = step


class Undeclared:
    name = "undeclared"
'''


def load(folder: Path, name: str, extra: str = ""):
    """DEMO with ``extra`` lines in ``step``, written to ``folder/services/demo/<name>.py`` and imported."""
    path = folder / "services" / "demo" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEMO.replace("{extra}", extra))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import does: inspect finds a class's file through it
    spec.loader.exec_module(module)
    return module, path


def file_lines(path: Path, block: dict) -> str:
    return "".join(path.read_text().splitlines(keepends=True)[block["first_line"] - 1:block["last_line"]])


def test_a_part_is_its_objects_lines_of_the_file(tmp_path):
    module, path = load(tmp_path, "demo_backend")
    source = model_source(module.DemoBackend)
    network, step = source["network"], source["train_step"]
    assert network["file"] == step["file"] == "services/demo/demo_backend.py"
    # Several objects: one block in file order, from helper's first line to Net's last.
    assert network["qualname"] == "helper, Net" and network["qualnames"] == ["helper", "Net"]
    assert (network["first_line"], network["last_line"]) == (6, 20)
    assert network["code"].startswith("def helper(x):\n") and network["code"].endswith("return x * self.scale\n")
    assert network["code"] == file_lines(path, network)
    assert network["lines"] == 7  # def, return; class, def, assignment, def, return
    # A decorated function: unwrapped to its own source, the decorator included.
    assert step["qualname"] == "step" and step["code"].startswith("@traced\ndef step(net, x):\n")
    assert step["code"] == file_lines(path, step)
    assert step["lines"] == 4
    assert model_source(module.Undeclared) == {"network": None, "train_step": None}


def test_changing_the_file_changes_the_answer(tmp_path):
    before = model_source(load(tmp_path / "a", "demo_before")[0].DemoBackend)["train_step"]
    module, path = load(tmp_path / "b", "demo_after", extra="    y = y + 1  # one more line of code\n")
    after = model_source(module.DemoBackend)["train_step"]
    assert after["code"] == file_lines(path, after) != before["code"]
    assert "y = y + 1" in after["code"]
    assert (after["last_line"], after["lines"]) == (before["last_line"] + 1, before["lines"] + 1)


def test_objects_of_one_part_must_be_next_to_each_other(tmp_path):
    module, _ = load(tmp_path, "demo_apart")
    with pytest.raises(ValueError, match="not next to each other"):
        source_block((module.helper, module.step))  # traced lies between them
    with pytest.raises(ValueError, match="not next to each other"):
        source_block((module.Net, module.Net.forward))  # one inside the other


def test_servekit_modules_are_named_by_their_place_in_the_repository():
    block = source_block(servekit.machine.machine_facts)
    assert block["file"] == "servekit/servekit/machine.py" and block["qualname"] == "machine_facts"
    assert block["code"] == file_lines(REPOSITORY / block["file"], block)


@pytest.mark.parametrize(("module", "file", "expected"), [
    ("servekit.keras_models", "/venv/lib/python3.11/site-packages/servekit/keras_models.py",
     "servekit/servekit/keras_models.py"),  # installed in a service's image
    ("servekit", "/work/servekit/servekit/__init__.py", "servekit/servekit/__init__.py"),
    ("backend", "/app/services/torch/backend.py", "services/torch/backend.py"),  # the image's layout
    ("backend", "/home/me/services/checkout/services/jax/backend.py", "services/jax/backend.py"),
    ("elsewhere", "/opt/code/elsewhere.py", "elsewhere.py"),
])
def test_repository_path(module, file, expected):
    assert repository_path(module, file) == expected


@pytest.mark.parametrize(("code", "expected"), [
    ("x = 1\n\n\ny = 2\n", 2),  # blank lines do not count
    ("# a comment\n    # an indented comment\nx = 1  # a statement with a comment counts\n", 1),
    ('def f():\n    """One line."""\n    return 1\n', 2),  # a docstring does not count
    ('class C:\n    """Several\n\n    lines.\n    """\n\n    def m(self):\n        """Too."""\n        pass\n', 3),
    ('x = """a string\nthat is not\na docstring"""\n', 3),  # every line of a string that is code counts
    ("total = add(\n    1,\n    2,\n)\n", 4),  # every line of a statement counts
    ('    def method(self):\n        """Indented, as a method is."""\n        return self\n', 2),
    ("@decorator\ndef f(): pass\n", 2),
    ("", 0),
])
def test_lines_of_code(code, expected):
    assert code_lines(code) == expected


def test_a_real_function_counts_every_line_but_its_one_line_docstring():
    block = source_block(servekit.machine.proc_field)
    lines = block["code"].splitlines()
    assert lines[1].strip().startswith('"""') and lines[1].strip().endswith('"""')
    assert block["lines"] == len([line for line in lines if line.strip() and not line.strip().startswith("#")]) - 1
