import subprocess
import sys

import pytest

from dpaudit.memory import keep_freed_memory, peak_rss_mib

# Allocates and frees a 64 MB tensor 20 times and prints the page faults of the last 10 rounds.
FAULTS = """
import resource, sys, torch
from dpaudit.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def churn(rounds):
    for _ in range(rounds):
        torch.ones(16 * 1024 * 1024).sum()
churn(10)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn(10)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_large_blocks_are_reused_without_page_faults():
    default, kept = _faults("default"), _faults("keep")
    assert default > 10 * 16_000 / 2  # 10 rounds of 16,000 4-KB pages, faulted in again each round
    assert kept < default / 20


def test_keep_freed_memory_reports_whether_it_applied():
    assert keep_freed_memory() is sys.platform.startswith("linux")


# Prints the peak resident memory before and after touching 256 MiB (in a fresh process, so
# that the test's own peak does not hide the rise).
PEAK = """
import numpy as np
from dpaudit.memory import peak_rss_mib
before = peak_rss_mib()
block = np.ones(32 * 1024 * 1024)  # 256 MiB of float64, every page written
print(before, peak_rss_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB is Linux's unit")
def test_peak_rss_rises_by_the_memory_a_process_touches():
    before, after = map(float, subprocess.run([sys.executable, "-c", PEAK], capture_output=True, text=True,
                                              check=True).stdout.split())
    # MiB: the peak holds the whole block at once, and at most the earlier peak, the block and a
    # little more (a unit off by 1024 fails either bound)
    assert 256 <= after <= before + 256 + 32
    assert peak_rss_mib() > 0
