"""servekit.memory: the process's resident memory now, at its peak, and at its peak over a block."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest

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


ARENAS_AFTER_THREADS = """
import ctypes, os, re, sys, tempfile, threading
from servekit.memory import one_malloc_arena
set_ = one_malloc_arena() if sys.argv[1] == "one" else False
blocks = []
def allocate():  # a block big enough for malloc (not Python's small-object allocator), from this thread
    blocks.append(bytearray(1 << 20))
threads = [threading.Thread(target=allocate) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fdopen.restype = ctypes.c_void_p
with tempfile.TemporaryFile() as report:
    stream = libc.fdopen(os.dup(report.fileno()), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    report.seek(0)
    print(set_, len(re.findall(rb"<heap nr=", report.read())))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc arenas")
def test_one_malloc_arena_keeps_new_threads_on_the_main_heap():
    """Threads that malloc get arenas of their own (glibc's malloc_info lists them), unless one_malloc_arena ran."""
    def arenas(mode: str) -> tuple[str, int]:
        env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
        out = subprocess.run([sys.executable, "-c", ARENAS_AFTER_THREADS, mode], env=env, capture_output=True,
                             text=True, timeout=60, check=True).stdout.split()
        return out[0], int(out[1])

    assert arenas("one") == ("True", 1)
    _, count = arenas("default")
    assert count > 1, "threads shared the main arena even without one_malloc_arena: the test shows nothing here"
