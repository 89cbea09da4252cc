"""Freed arrays are kept for reuse (microtensor/memory.py): a freed array's memory serves
the next one of that size without page faults. Counted in a fresh interpreter, where
nothing else has shaped malloc's state, with and without the opt-out, for a 16 MB array
and for one of 128 MB, above glibc's largest mmap threshold (32 MB): at GPT-2's size a
training step makes several of 100-150 MB, and mapping each afresh cost 0.4-0.5 s of
page faults a step."""
import os
import platform
import subprocess
import sys

import pytest

REALLOCATE = """
import resource
import sys
import numpy as np
import microtensor
n = int(sys.argv[1])
a = np.ones(n)                  # every page touched
del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = np.ones(n)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(keep: str, n_floats: int) -> int:
    env = dict(os.environ, MICROTENSOR_KEEP_FREED_MEMORY=keep)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", REALLOCATE, str(n_floats)], env=env,
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the thresholds are glibc malloc's; elsewhere "
                           "keep_freed_memory() does nothing")
@pytest.mark.parametrize("n_floats", [2_000_000, 16_000_000], ids=["16 MB", "128 MB"])
def test_a_freed_array_is_reused_without_page_faults(n_floats):
    kept, default = page_faults("1", n_floats), page_faults("0", n_floats)
    assert kept <= 4                 # the freed heap memory serves the new array
    assert default > kept            # malloc's default maps fresh pages (16 MB is 3,900
                                     # pages, 128 MB 31,250, fewer where huge pages are used)
