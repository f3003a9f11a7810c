"""The compact body of the internal hop: raw float32 pixels instead of 784 JSON numbers.

``Content-Type: application/x-mnist-float32``: N images of 28x28 little-endian
float32 pixels in 0..1, row-major, one after the other (3,136 bytes each);
the image count is the body's length / 3,136. It is what the gateway sends
the services after its own preprocessing, so they parse it with one
``numpy.frombuffer`` and no Python loop.
"""

from __future__ import annotations

import numpy as np

from .errors import BadRequest

TENSOR_MEDIA_TYPE = "application/x-mnist-float32"
IMAGE_BYTES = 28 * 28 * 4


def tensor_to_input(body: bytes, max_images: int) -> np.ndarray:
    """Raw float32 pixels -> float32 (N, 28, 28, 1); 400 for a wrong length, count, or values outside 0..1."""
    count, remainder = divmod(len(body), IMAGE_BYTES)
    if remainder or count == 0:
        raise BadRequest(f"a {TENSOR_MEDIA_TYPE} body is a whole number of 28x28 float32 images "
                         f"({IMAGE_BYTES:,} bytes each); got {len(body):,} bytes")
    if count > max_images:
        raise BadRequest(f"at most {max_images:,} images per request; got {count:,}")
    x = np.frombuffer(body, dtype="<f4").reshape(count, 28, 28, 1)
    # NaN fails both comparisons, so one pass each refuses NaN, infinities and out-of-range pixels.
    if not (x.min() >= 0.0 and x.max() <= 1.0):
        raise BadRequest("pixels must be floats between 0 and 1")
    return x.astype(np.float32)  # native byte order, writable


def input_to_tensor(x: np.ndarray) -> bytes:
    """float (N, 28, 28[, 1]) pixels in 0..1 -> the body of a ``TENSOR_MEDIA_TYPE`` request."""
    return np.ascontiguousarray(x, dtype="<f4").tobytes()
