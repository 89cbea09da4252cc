"""Freed arrays are kept for reuse (microtensor/memory.py): a freed 16 MB array's memory
serves the next one of that size without page faults. Counted in a fresh interpreter,
where nothing else has shaped malloc's state, with and without the opt-out."""
import os
import platform
import subprocess
import sys

import pytest

REALLOCATE = """
import resource
import numpy as np
import microtensor
a = np.ones(2_000_000)          # 16 MB, every page touched
del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = np.ones(2_000_000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the thresholds are glibc malloc's; elsewhere keep_freed_memory() does nothing")


def page_faults(keep: str) -> int:
    env = dict(os.environ, MICROTENSOR_KEEP_FREED_MEMORY=keep)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", REALLOCATE], env=env, capture_output=True,
                         text=True, check=True)
    return int(out.stdout)


@glibc_only
def test_a_freed_array_is_reused_without_page_faults():
    kept, default = page_faults("1"), page_faults("0")
    assert kept <= 4                 # the freed heap memory serves the new array
    assert default > kept            # malloc's default maps fresh pages (16 MB is 3,900
                                     # pages, or 8 huge pages where the kernel uses them)
