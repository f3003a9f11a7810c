import os
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run: CI is repeatable, and a failure can be rerun as it was.
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.load_profile("repeatable")


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    folder = Path(os.environ.get("MNIST_DIR", Path(__file__).parents[2] / ".." / "shared" / "data" / "mnist"))
    if not (folder / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST files not found in {folder}; set MNIST_DIR")
    return folder


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    from servekit.mnist import load_mnist

    return load_mnist(mnist_dir, mirrors=())
