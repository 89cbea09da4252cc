"""Arrays larger than glibc's largest mmap threshold (32 MB) are kept for reuse too
(microtensor/memory.py): at GPT-2's size a training step makes several of 100-150 MB, and
mapping each afresh cost 0.4-0.5 s of page faults a step. Counted in a fresh interpreter,
with and without the opt-out, as tests/test_memory.py does for a 16 MB array."""
import os
import platform
import subprocess
import sys

import pytest

REALLOCATE = """
import resource
import numpy as np
import microtensor
a = np.ones(16_000_000)         # 128 MB, every page touched
del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = np.ones(16_000_000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(keep: str) -> int:
    env = dict(os.environ, MICROTENSOR_KEEP_FREED_MEMORY=keep)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", REALLOCATE], env=env, capture_output=True,
                         text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc malloc's; elsewhere nothing is set")
def test_a_freed_array_above_the_mmap_threshold_is_reused_without_page_faults():
    kept, default = page_faults("1"), page_faults("0")
    assert kept <= 4                 # the heap serves the new array from the freed one
    assert default > kept            # mapped afresh: 31,250 pages, or 62 huge pages
