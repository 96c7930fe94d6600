"""Peak resident memory of this process, as the stages and benchmarks report it.

Linux keeps getrusage's ru_maxrss across fork and exec: a child started by a large parent (a benchmark holding a
model, a Jupyter server) reports at least the parent's size at the fork. VmHWM in /proc/self/status belongs to the
process's own address space, which exec replaces, so it is the process's own peak; elsewhere ru_maxrss is used.
"""
from __future__ import annotations

import resource
import sys


def peak_rss_mib() -> float:
    """The peak resident set size of this process in MiB (VmHWM where /proc exists, else ru_maxrss)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KiB on Linux
