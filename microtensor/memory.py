"""Keep freed memory in the process for the next training step, instead of handing it back
to the operating system after every step.

Every op returns a new array, and a training step frees most of them again: on the
reference model about 40 MB, in arrays of 0.1 to 2 MB. glibc's malloc (Linux) serves each
large request either by mapping fresh pages (freed with munmap) or from the heap, whose
free top it hands back once it exceeds a threshold; which happens depends on the order of
earlier requests. When it goes badly, every step faults its arrays in anew: thousands of
page faults a step, where the same step with a luckier order faults a few dozen times
(`tests/bench/bench_memory.py`; docs/performance.md). A step written by hand with preallocated buffers
never pays it.

`keep_freed_memory()` fixes the two thresholds, so arrays up to 32 MB come from the heap
and up to 256 MB of freed heap stay in the process: after the first step, every step
reuses the same memory, with no page faults. Larger arrays would still be mapped afresh
(32 MB is the most glibc's threshold can be), and at GPT-2's size a step makes several
(the logits and their gradient, 103 MB each at batch 4 x 128; the token table's two
gradients, 154 MB each): 13,000-32,000 page faults and 0.4-0.5 s of kernel time in a 2.6 s
step. So it also turns mapping off (M_MMAP_MAX 0): every array comes from the heap, where
a freed one serves the next of its size (0 faults a step after the first, the step
2.2 s). The cost is that the process keeps what its largest step used, as PyTorch's
caching allocators do on a GPU (at GPT-2's size 4.2 GB after a step, not 3.3 GB; the peak
grew 5%). It is called once when microtensor is imported, on glibc only; set
MICROTENSOR_KEEP_FREED_MEMORY=0 before the import to leave malloc as it was.

    >>> keep_freed_memory() in (True, False)   # False where malloc is not glibc's
    True
"""
from __future__ import annotations

import ctypes
import os
import platform

MMAP_THRESHOLD = 32 << 20   # requests above this are mapped afresh: glibc's own upper limit
MMAP_MAX = 0                # ... unless mapping is off: then the heap serves every request
TRIM_THRESHOLD = 256 << 20  # freed memory at the heap's top kept up to this much

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4   # mallopt's numbers (malloc.h)


def keep_freed_memory() -> bool:
    """Set glibc's malloc thresholds as the module docstring says. Returns whether they
    were set (False off Linux/glibc, where this does nothing)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt   # the C library Python itself runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # (glibc still maps when the heap cannot grow, so a request too large for it fails
    # as it would have, and threads' own arenas map what exceeds their 64 MB heaps.)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_MMAP_MAX, MMAP_MAX)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def at_import() -> None:
    """keep_freed_memory(), unless MICROTENSOR_KEEP_FREED_MEMORY is 0, false or no."""
    if os.environ.get("MICROTENSOR_KEEP_FREED_MEMORY", "1").strip() not in ("0", "false", "no"):
        keep_freed_memory()
