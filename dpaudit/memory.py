"""Keep freed memory in the process instead of handing it back to the OS after every step.

Training loops here free and re-allocate the same large buffers on every step: opacus'
per-sample gradients (a 2,048-record batch of a small CNN holds hundreds of MB), batch
activations, the blocks of the nearest-neighbour search. glibc serves blocks over its mmap
threshold (at most 32 MB by default) with mmap and returns them with munmap when freed, so the
next step page-faults the same memory back in, zeroed by the kernel. On the reference machine
that kernel time was 40% of a DP-SGD step of the bn-matching classifier (1.43 s per step, 0.65 s
of it system time; 1.08 s with the settings below). No library call does this (torch's CPU
allocator has no caching), hence the two `mallopt` calls by hand.

`peak_rss_mib` reads the process's peak resident memory, as the benchmarks report it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
KEEP = 2**31 - 1  # bytes: in practice "never" for both thresholds


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve large blocks from the heap and keep freed memory for reuse
    (process-wide; the resident size then stays at its peak). True if applied; a no-op off
    glibc (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP))


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, MiB (Linux reports ru_maxrss in KiB)."""
    import resource  # Unix only: imported here so that keep_freed_memory stays importable everywhere

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
