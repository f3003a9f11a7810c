"""Batch-size buckets for frameworks that compile one program per input shape (XLA under JAX).

A jitted model called with 3 images and then with 5 compiles twice. Serving pads every batch up to the next
of a few sizes (1, 2, 4, ..., ``max_batch``) and compiles them all while warming a version up, before it is
swapped in, so that no request pays for a compilation. Larger batches run in chunks of ``max_batch``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np


def max_batch_from_env() -> int:
    """The services' MAX_BATCH (dynamic batching's images per model call), which the largest bucket matches."""
    return max(1, int(os.environ.get("MAX_BATCH", "32")))


def bucket_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to ``max_batch`` (included, even when it is not a power of two)."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch]


def run_in_buckets(call: Callable[[np.ndarray], np.ndarray], x: np.ndarray, sizes: list[int]) -> np.ndarray:
    """``call`` over ``x`` in chunks of at most the largest size, each padded with zeros to a bucket size;
    the rows of the padding dropped from the answer."""
    answers = []
    for start in range(0, len(x), sizes[-1]):
        chunk = x[start:start + sizes[-1]]
        size = next(s for s in sizes if s >= len(chunk))
        padded = chunk if size == len(chunk) else np.concatenate(
            [chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        answers.append(np.asarray(call(padded))[:len(chunk)])
    return np.concatenate(answers) if answers else np.zeros((0, 10), np.float32)


def warm_up_buckets(call: Callable[[np.ndarray], np.ndarray], sizes: list[int]) -> None:
    """Call once per bucket size (zeros), so that each one's program is compiled before any request."""
    for size in sizes:
        np.asarray(call(np.zeros((size, 28, 28, 1), np.float32)))
