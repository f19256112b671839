"""The glibc heap thresholds: applied on Linux/glibc, and large freed blocks then come back from
the heap instead of fresh pages (seen as no new page faults when a freed block is reused)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from elf_pipeline.allocator import keep_freed_memory

PROBE = """
import ctypes, resource, sys
from elf_pipeline.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
def touch():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    touch()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[bool, int]:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    applied, faults = result.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")
def test_thresholds_make_freed_blocks_reusable():
    applied, tuned = _faults("tuned")
    assert applied
    _, default = _faults("default")
    pages = (64 << 20) // 4096
    assert default > 4 * pages  # each 64 MiB block came back as fresh, zeroed pages
    assert tuned < pages  # reused from the heap


def test_returns_a_verdict():
    assert keep_freed_memory() is sys.platform.startswith("linux")
