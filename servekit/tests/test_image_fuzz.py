"""Mutation fuzz of the image decoder, with a fixed time budget: whatever the bytes, only 4xx errors escape."""

from __future__ import annotations

import io
import os
import random
import time

import numpy as np
import pytest
from PIL import Image

from servekit.errors import ApiError
from servekit.images import image_to_input

BUDGET_S = float(os.environ.get("IMAGE_FUZZ_SECONDS", "8"))


def seeds(digit: np.ndarray) -> list[bytes]:
    """One real digit in every accepted format, in several modes."""
    gray = Image.fromarray(((1.0 - digit) * 255).astype(np.uint8)).resize((56, 56))
    found = []
    for image, fmt in ((gray, "PNG"), (gray.convert("RGBA"), "PNG"), (gray.convert("RGB"), "JPEG"),
                       (gray.convert("P"), "GIF"), (gray, "BMP"), (gray.convert("RGB"), "WEBP")):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        found.append(buffer.getvalue())
    return found


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A truncation, bit flips, a header edit, or a spliced chunk."""
    data = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(data[: rng.randrange(len(data))])
    if kind == 1:
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == 2:
        position = rng.randrange(min(64, len(data)))
        data[position : position + 4] = rng.randbytes(4)  # sizes and types live in the first bytes
    else:
        start = rng.randrange(len(data))
        data[start:start] = data[rng.randrange(len(data)) :][: rng.randint(1, 256)]
    return bytes(data)


def test_mutated_images_only_ever_give_client_errors(mnist):
    digit = mnist.test.images[0].astype(np.float32) / 255.0
    corpus, rng = seeds(digit), random.Random(20261129)
    deadline, tried, outcomes = time.monotonic() + BUDGET_S, 0, {}
    while time.monotonic() < deadline:
        data = mutate(rng.choice(corpus), rng)
        try:
            out = image_to_input(data)
            assert out.shape == (28, 28, 1) and np.all(np.isfinite(out))
            outcomes["decoded"] = outcomes.get("decoded", 0) + 1
        except ApiError as exc:
            assert 400 <= exc.status < 500, exc
            outcomes[exc.status] = outcomes.get(exc.status, 0) + 1
        tried += 1
    print(f"{tried} mutated images in {BUDGET_S:g} s: {outcomes}")
    assert tried > 100


@pytest.mark.parametrize("data", [b"", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM" + b"\xff" * 60, b"RIFF\0\0\0\0WEBP"])
def test_headers_alone_are_client_errors(data):
    with pytest.raises(ApiError) as refused:
        image_to_input(data)
    assert 400 <= refused.value.status < 500
