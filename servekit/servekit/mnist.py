"""MNIST from the four IDX files: verified loading, download, split and data hash.

Every service reads MNIST through this module, so every framework sees the same
bytes and the same split; ``MnistData.sha256`` proves it across services.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Published md5 of the *uncompressed* files: gzip bytes differ between mirrors.
FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "6bbc9ace898e44ae57da46a324031adb"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "a25bea736e30d166cdddb491f175f624"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "2646ac647ad5339dbf082846283269ea"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "27ae3e4e09519cfbb04c329615203637"),
}
DEFAULT_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
TRAIN_SIZE = 54_000  # the first 54,000 training images
VALIDATION_SIZE = 6_000  # the last 6,000, as Keras' validation_split=0.1 takes them
DOWNLOAD_TIMEOUT_S = 30


class MnistUnavailable(RuntimeError):
    """MNIST is neither in the folder nor downloadable."""


@dataclass(frozen=True)
class Split:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one part of MNIST."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, limit: int | None) -> Split:
        """The first ``limit`` examples (all of them when limit is None)."""
        if limit is None:
            return self
        return Split(self.images[:limit], self.labels[:limit])


@dataclass(frozen=True)
class MnistData:
    """The fixed train / validation / test split and where its files are."""

    train: Split
    validation: Split
    test: Split
    folder: Path
    sha256: str


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1], the models' input."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def mirrors_from_env() -> tuple[str, ...]:
    """Download mirrors: ``MNIST_MIRRORS`` (comma-separated base URLs) or the public ones."""
    configured = os.environ.get("MNIST_MIRRORS", "")
    urls = tuple(u.strip() for u in configured.split(",") if u.strip())
    return urls or DEFAULT_MIRRORS


def load_mnist(folder: str | os.PathLike, mirrors: tuple[str, ...] | None = None) -> MnistData:
    """Load and verify MNIST from ``folder``, downloading missing files from ``mirrors``."""
    folder = Path(folder)
    mirrors = mirrors_from_env() if mirrors is None else mirrors
    raw = {key: _read_verified(folder, name, md5, mirrors) for key, (name, md5) in FILES.items()}
    train_images, train_labels = _parse_images(raw["train_images"]), _parse_labels(raw["train_labels"])
    test_images, test_labels = _parse_images(raw["test_images"]), _parse_labels(raw["test_labels"])
    return MnistData(
        train=Split(train_images[:TRAIN_SIZE], train_labels[:TRAIN_SIZE]),
        validation=Split(train_images[TRAIN_SIZE:], train_labels[TRAIN_SIZE:]),
        test=Split(test_images, test_labels),
        folder=folder,
        sha256=arrays_sha256(train_images, train_labels, test_images, test_labels),
    )


def arrays_sha256(*arrays: np.ndarray) -> str:
    """sha256 over the arrays' shapes, dtypes and bytes, in order."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _read_verified(folder: Path, name: str, md5: str, mirrors: tuple[str, ...]) -> bytes:
    path = folder / name
    if path.exists():
        data = _gunzip(path.read_bytes(), name)
        if hashlib.md5(data).hexdigest() != md5:
            raise MnistUnavailable(f"{path} is corrupt (md5 mismatch); delete it to download it again")
        return data
    errors = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + name
        try:
            compressed = _fetch(url)
            data = _gunzip(compressed, url)
        except (OSError, MnistUnavailable) as exc:
            errors.append(f"{url}: {exc}")
            continue
        if hashlib.md5(data).hexdigest() != md5:
            errors.append(f"{url}: md5 mismatch")
            continue
        _write_atomically(path, compressed)
        return data
    raise MnistUnavailable(
        f"MNIST not found in {folder} and could not be downloaded: {'; '.join(errors) or 'no mirrors'}; "
        "set MNIST_DIR to a folder holding the four IDX .gz files"
    )


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        return response.read()


def _gunzip(compressed: bytes, source: str) -> bytes:
    try:
        return gzip.decompress(compressed)
    except (OSError, EOFError) as exc:
        raise MnistUnavailable(f"{source} is not a valid gzip file: {exc}") from exc


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".part")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except OSError:
        # A read-only folder still lets this process use the downloaded bytes.
        pass


def _parse_images(data: bytes) -> np.ndarray:
    magic, count, rows, cols = np.frombuffer(data, ">u4", count=4)
    if magic != 2051:
        raise MnistUnavailable(f"bad IDX image magic {magic}")
    return np.frombuffer(data, np.uint8, offset=16).reshape(int(count), int(rows), int(cols))


def _parse_labels(data: bytes) -> np.ndarray:
    magic, count = np.frombuffer(data, ">u4", count=2)
    if magic != 2049:
        raise MnistUnavailable(f"bad IDX label magic {magic}")
    return np.frombuffer(data, np.uint8, offset=8, count=int(count))


def write_uncompressed(folder: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Write the four IDX files of ``folder``, uncompressed, into ``target`` (for readers that want them so).

    Files already there with the right md5 are kept; returns ``target``.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for name, md5 in FILES.values():
        raw_path = target / name.removesuffix(".gz")
        if raw_path.exists() and hashlib.md5(raw_path.read_bytes()).hexdigest() == md5:
            continue
        data = _read_verified(Path(folder), name, md5, mirrors_from_env())
        fd, tmp = tempfile.mkstemp(dir=target, prefix=raw_path.name, suffix=".part")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, raw_path)
    return target
