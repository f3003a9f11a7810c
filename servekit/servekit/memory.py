"""A process's memory (framework-free): how much it holds now and at its peak, the peak over a block such as a
training, and the malloc settings for training loops that allocate and free tens of MB every step."""

from __future__ import annotations

import contextlib
import ctypes
import platform
import resource
from collections.abc import Iterator
from dataclasses import dataclass

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters (malloc.h)
STATUS, CLEAR_REFS = "/proc/self/status", "/proc/self/clear_refs"
RESET_PEAK = "5"  # written to clear_refs: the kernel resets the process's peak RSS (VmHWM) to its RSS now

_peak_before_reset = 0  # the process's peak RSS when peak_rss_during last reset the kernel's


def resident_memory() -> dict:
    """This process's resident memory in bytes: ``rss_bytes`` now, and ``peak_rss_bytes``, the most it has held
    since it started (the kernel's VmHWM and ``ru_maxrss``, and what they were before ``peak_rss_during`` reset
    them); None where the system does not say."""
    status = _status_bytes("VmRSS", "VmHWM")
    # The RSS too: the kernel's counters are per thread and summed lazily, so VmHWM can lag a page or a few.
    peaks = [peak for peak in (status["VmRSS"], status["VmHWM"], _ru_maxrss_bytes(), _peak_before_reset) if peak]
    return {"rss_bytes": status["VmRSS"], "peak_rss_bytes": max(peaks) if peaks else None}


@dataclass
class Peak:
    """What ``peak_rss_during`` measured: bytes, or None when it could not be measured; set when the block ends."""

    bytes: int | None = None


@contextlib.contextmanager
def peak_rss_during() -> Iterator[Peak]:
    """The process's peak resident memory while the block runs (a training), in ``Peak.bytes`` once it ends.

    Linux keeps each process's peak RSS (VmHWM) and lets the process reset it to its RSS of the moment: reset at
    the start and read at the end, it is the block's peak, transient buffers included (sampling the RSS would miss
    them). What the process had held before is kept for ``resident_memory``. Where the reset is not allowed, the
    peak is known only when the block raised the process's peak (else None). It is the peak of the whole process,
    so of whatever else it ran meanwhile, and one measurement at a time: a trainer runs one job at a time.
    """
    global _peak_before_reset
    before = resident_memory()["peak_rss_bytes"]
    reset = _reset_peak()
    if reset:
        _peak_before_reset = max(_peak_before_reset, before or 0)
    peak = Peak()
    try:
        yield peak
    finally:
        after = max((value for value in _status_bytes("VmRSS", "VmHWM").values() if value), default=None)
        if reset or (after and before and after > before):
            peak.bytes = after


def _reset_peak() -> bool:
    try:
        with open(CLEAR_REFS, "w", encoding="ascii") as clear_refs:
            clear_refs.write(RESET_PEAK)
        return True
    except OSError:
        return False


def _status_bytes(*keys: str) -> dict[str, int | None]:
    """Fields of /proc/self/status given in kB, in bytes (None each when absent or unreadable)."""
    found: dict[str, int | None] = dict.fromkeys(keys)
    try:
        with open(STATUS, encoding="ascii", errors="replace") as lines:
            for line in lines:
                name, _, value = line.partition(":")
                if name in found:
                    found[name] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found


def _ru_maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if platform.system() == "Darwin" else peak * 1024  # bytes on macOS, KiB on Linux


@contextlib.contextmanager
def freed_memory_kept():
    """While training, let glibc's malloc keep freed activations for the next step instead of unmapping them.

    Used by the torch service (torch) and the jax service (XLA's CPU runtime mallocs every step's buffers too: 9,600
    page faults and 49 ms a step against 300 and 35 ms with these settings). A training step allocates and frees
    tens of MB of activations and gradients. With glibc's default thresholds these blocks are mmap'ed, or trimmed
    back to the kernel, after every step and faulted in again page by page on the next: some 20,000 page faults a
    step, a third of the epoch. (PyTorch's CPU tuning guide swaps the allocator for jemalloc or tcmalloc; TensorFlow
    reuses its buffers and does not pay it.) Afterwards the freed memory goes back to the kernel, and the thresholds
    to the ceilings that glibc's own adaptive ones stop at (32 MiB and twice that), for the process's serving.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, 256 << 20)  # blocks up to 256 MiB come from the heap, not from mmap
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)  # and the heap is not trimmed after each step
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
            libc.mallopt(M_TRIM_THRESHOLD, 64 << 20)
            libc.malloc_trim(0)


def one_malloc_arena() -> bool:
    """From now on, every new thread mallocs from glibc's main heap (M_ARENA_MAX 1), not from an arena of its own;
    True when set (glibc only). Call it before a runtime starts its threads.

    For XLA's CPU runtime (the jax service): each of its threads otherwise gets a per-thread arena, whose heaps are
    at most 64 MiB and shrink back to the kernel, outside what ``freed_memory_kept`` sets for the main heap. So
    keras-jax's step buffers were mapped and faulted in anew every step: 4.4 million page faults and 12.2 s an
    epoch of 20,000 images, against 3,000 faults and 7.6 s with one arena (scripts/bench_training.py --models
    keras-jax --train-limit 20000, MALLOC_ARENA_MAX unset and 1). flax gained little (4.67 s to 4.42 s) and
    keras-torch nothing, so only the jax service sets it, and only in a process that trains.
    """
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, 1))


def _glibc():
    """The C library when it is glibc (whose mallopt these settings are), else None."""
    return ctypes.CDLL(None) if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" else None
