"""The request body every endpoint gets: one real MNIST test digit, PNG-encoded, in the multipart field ``image``.

The bytes are built once and sent unchanged to every endpoint (the services, the gateway and TorchServe all
read the multipart field ``image``), so that every server decodes exactly the same upload.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from servekit.mnist import load_mnist
from servekit.testing import png_bytes

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"


@dataclass(frozen=True)
class Payload:
    """A multipart/form-data body with one PNG, and what it shows."""

    png: bytes
    body: bytes
    content_type: str
    digit_index: int
    digit_label: int

    def describe(self) -> dict:
        return {
            "field": "image",
            "png_bytes": len(self.png),
            "body_bytes": len(self.body),
            "png_sha256": hashlib.sha256(self.png).hexdigest(),
            "mnist_test_index": self.digit_index,
            "mnist_label": self.digit_label,
        }


def mnist_dir() -> Path:
    """``MNIST_DIR``, else ``../shared/data/mnist`` beside the repository (as the tests and `make` use)."""
    return Path(os.environ.get("MNIST_DIR") or DEFAULT_MNIST_DIR).resolve()


def digit_payload(index: int = 0, folder: Path | None = None) -> Payload:
    """The multipart upload of MNIST test digit ``index`` (downloaded and verified if the files are missing)."""
    test = load_mnist(folder or mnist_dir()).test
    if not 0 <= index < len(test.labels):
        raise ValueError(f"--digit must be between 0 and {len(test.labels) - 1}, got {index}")
    png = png_bytes(test.images[index])
    body, content_type = multipart(png)
    return Payload(png, body, content_type, index, int(test.labels[index]))


def multipart(png: bytes, field: str = "image", filename: str = "digit.png") -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart/form-data request with one file, as ``curl -F image=@digit.png``."""
    boundary = f"----bench{secrets.token_hex(12)}"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    return head + png + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
