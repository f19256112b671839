"""The glibc heap thresholds: applied on Linux/glibc, and large freed blocks then come back from
the heap instead of fresh pages: a freed block stays resident and its reuse takes no new page faults,
where glibc's defaults unmap it and fault its pages in afresh.  Page faults are counted in units of
whatever pages back the block (4 KiB, or 2 MiB where transparent huge pages apply), so the bounds
below hold for either."""

from __future__ import annotations

import subprocess
import sys

import pytest

from elf_pipeline.infra.allocator import keep_freed_memory

PROBE = """
import ctypes, os, resource, sys
from elf_pipeline.infra.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def touch():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
base = resident()
touch()
kept = resident() - base
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    touch()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, kept)
"""
BLOCK = 64 << 20
HUGE_PAGE = 2 << 20  # the largest page a fault maps here (x86-64 and arm64 transparent huge pages)


def _probe(mode: str) -> tuple[bool, int, int]:
    """(thresholds applied, page faults of five reuses of a freed 64 MiB block, bytes still resident
    after the first block was freed)."""
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    applied, faults, kept = result.stdout.split()
    return applied == "True", int(faults), int(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")
def test_thresholds_make_freed_blocks_reusable():
    applied, tuned, tuned_kept = _probe("tuned")
    assert applied
    _, default, default_kept = _probe("default")
    # Measured (4 KiB pages): 81,925 faults with the defaults (5 x 16,384, every page afresh), 0 tuned;
    # with 2 MiB pages the defaults take at least 5 x 32.
    assert default >= 5 * BLOCK // HUGE_PAGE  # each 64 MiB block came back as fresh, zeroed pages
    assert tuned < BLOCK // HUGE_PAGE  # reused from the heap: not even one block's worth of huge pages
    # the freed block stays in the heap with the tuning, and goes back to the kernel without it
    # (measured: 64 MiB still resident tuned, none with the defaults)
    assert tuned_kept > BLOCK // 2 and default_kept < BLOCK // 4, (tuned_kept, default_kept)


def test_returns_a_verdict():
    assert keep_freed_memory() is sys.platform.startswith("linux")
