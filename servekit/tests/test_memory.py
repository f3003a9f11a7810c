"""servekit.memory: the process's resident memory now, at its peak, and at its peak over a block."""

from __future__ import annotations

import numpy as np

from servekit.memory import peak_rss_during, resident_memory

MIB = 1 << 20


def touched(megabytes: int) -> np.ndarray:
    """An array whose every page is written: resident, not only reserved."""
    return np.ones(megabytes * MIB, np.uint8)


def test_resident_memory_now_and_at_peak():
    before = resident_memory()
    assert 10 * MIB < before["rss_bytes"] <= before["peak_rss_bytes"]
    held = touched(64)
    now = resident_memory()
    assert now["rss_bytes"] >= before["rss_bytes"] + 60 * MIB
    del held
    assert resident_memory()["peak_rss_bytes"] >= now["rss_bytes"] - MIB  # the kernel's counters lag a few pages


def test_peak_over_a_block_counts_what_it_freed_again_and_only_that_block():
    start = resident_memory()["rss_bytes"]
    with peak_rss_during() as big:
        touched(200)  # allocated, written, freed within the block
    assert big.bytes >= start + 190 * MIB
    with peak_rss_during() as small:  # a later, smaller block: its own peak, not the process's
        held = touched(20)
    del held
    assert start <= small.bytes < big.bytes - 100 * MIB
    assert resident_memory()["peak_rss_bytes"] >= big.bytes  # the process's peak is kept across the reset
