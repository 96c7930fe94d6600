"""The peak memory a stage reports is its own: a child of a large parent does not inherit the parent's peak."""
import subprocess
import sys

import numpy as np

from spot_utils.base.memory import peak_rss_mib

CHILD = ("import resource; from spot_utils.base.memory import peak_rss_mib; "
         "print(peak_rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")


def test_a_child_reports_its_own_peak_not_its_parents():
    held = np.ones(1024 * 2**20 // 8)  # 1 GiB resident in this process
    held += 1
    own, inherited = map(float, subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                                               check=True).stdout.split())
    assert inherited >= 1024 > 700 > own  # ru_maxrss carries the parent's size across fork + exec; VmHWM does not
    del held


def test_the_peak_rises_by_an_allocation_above_it():
    before = peak_rss_mib()
    block = np.ones(int(before + 256) * 2**20 // 8)  # larger than everything resident so far
    block += 1
    assert peak_rss_mib() >= before + 200
    del block
