"""servekit.machine: the machine's facts, read from /proc and the interpreter."""

from __future__ import annotations

import os
import platform

from servekit.machine import machine_facts, proc_field


def test_machine_facts_describe_this_machine():
    facts = machine_facts()
    assert set(facts) == {"cpu_model", "cpu_count", "cpu_affinity", "memory_bytes", "platform", "python"}
    assert facts["cpu_count"] == os.cpu_count()
    assert facts["cpu_affinity"] == len(os.sched_getaffinity(0)) and 1 <= facts["cpu_affinity"] <= facts["cpu_count"]
    assert facts["python"] == platform.python_version() and facts["platform"] == platform.platform()
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    assert facts["memory_bytes"] == int(meminfo["MemTotal"].split()[0]) * 1024
    cpuinfo = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
    assert facts["cpu_model"] == (cpuinfo[0] if cpuinfo else platform.processor() or None)


def test_proc_field_reads_the_first_line_of_its_key(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmRSS:\t  2048 kB\nVmRSS:\t 1 kB\nBroken:\tx\n")
    assert proc_field(str(status), "VmRSS", lambda value: int(value.split()[0])) == 2048
    assert proc_field(str(status), "Name", str) == "python"
    assert proc_field(str(status), "Missing", str) is None
    assert proc_field(str(status), "Broken", int) is None  # does not parse
    assert proc_field(str(tmp_path / "absent"), "VmRSS", str) is None
