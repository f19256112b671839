"""Keep freed memory in the process heap (glibc) so that repeated large temporaries are reused.

glibc serves allocations above its mmap threshold (128 KiB at first, adapting upward only after
such blocks are freed) with fresh ``mmap`` pages, which the kernel must zero and map at first
touch. A CPU test pass allocates several MB per layer and chunk, so without tuning it spends most
of its time in page faults: measured on a 2-core machine, ConvNet-3 inference ran at about 1,100
images/s with the default and 1,700 with the tuning below (one thread). Raising the mmap and trim
thresholds makes such blocks come from, and return to, the heap. The cost is that the process's
resident memory stays at its peak instead of shrinking, which suits one-job-per-process stages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters of glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # serve blocks up to 1 GiB from the heap
TRIM_THRESHOLD = 2**31 - 1  # trim the heap top only when 2 GiB lie free there


def keep_freed_memory() -> bool:
    """Apply the thresholds; True when glibc accepted them (False elsewhere: nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not applied:
        log.debug("mallopt refused the allocator thresholds; keeping glibc's defaults")
    return applied
