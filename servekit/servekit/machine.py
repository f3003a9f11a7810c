"""The machine a process runs on, as a comparison's setup reports it (framework- and Flask-free: the gateway can
import it too)."""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Callable
from typing import Any


def machine_facts() -> dict:
    """CPU model, cores (``cpu_count``) and the cores this process may use (``cpu_affinity``), total memory in
    bytes, platform and Python version; a fact that cannot be read is None."""
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": memory_bytes(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


@functools.cache  # neither changes while the process runs, and /health is polled
def cpu_model() -> str | None:
    """The first ``model name`` of /proc/cpuinfo, else what ``platform.processor()`` says, else None."""
    return proc_field("/proc/cpuinfo", "model name", str) or platform.processor() or None


@functools.cache
def memory_bytes() -> int | None:
    """The machine's total memory (/proc/meminfo's ``MemTotal``) in bytes, or None."""
    return proc_field("/proc/meminfo", "MemTotal", lambda value: int(value.split()[0]) * 1024)


def proc_field(path: str, key: str, parse: Callable[[str], Any]) -> Any:
    """The value of the first ``key: value`` line of a /proc file, parsed; None when absent or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return parse(value.strip())
    except (OSError, ValueError):
        return None
    return None
