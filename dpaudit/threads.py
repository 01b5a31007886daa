"""How many threads torch's kernels use, chosen before torch starts, so that an audit stays fast
on a machine that other work shares.

torch starts one OpenMP worker per core it sees and, by default, lets idle workers spin: beside
another busy process the spinning workers steal the cores they wait for (measured on the
reference machine: `dpaudit demo` 71 s alone, 239 s beside one busy process). Here the thread
count is the number of CPUs this process may really use (its affinity mask, capped by a cgroup
CPU quota, as in containers and CI runners), and idle workers sleep (`OMP_WAIT_POLICY=PASSIVE`).
`--threads N`, `DPAUDIT_THREADS` or the user's own `OMP_NUM_THREADS` / `OMP_WAIT_POLICY` win.
OpenMP reads these variables once, when torch loads it; the CLI calls `configure()` first.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from dpaudit.errors import DpauditError

CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup's CPU quota (v2, then v1), or None when unlimited or unknown."""
    try:
        if CGROUP_V2_MAX.is_file():
            quota, period = CGROUP_V2_MAX.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if CGROUP_V1_QUOTA.is_file() and CGROUP_V1_PERIOD.is_file():
            quota = int(CGROUP_V1_QUOTA.read_text())
            return None if quota <= 0 else quota / int(CGROUP_V1_PERIOD.read_text())
    except (OSError, ValueError):
        return None
    return None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity call
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cpus, math.floor(quota) if quota else cpus))


def configure(threads: int | None = None) -> int:
    """Choose the thread count (`threads`, else $DPAUDIT_THREADS, else $OMP_NUM_THREADS, else
    `usable_cpus()`) and let idle OpenMP workers sleep unless $OMP_WAIT_POLICY says otherwise.
    Returns the count. Before torch is imported this sets the environment torch's OpenMP reads;
    after, it also calls torch.set_num_threads."""
    if threads is None and os.environ.get("DPAUDIT_THREADS"):
        try:
            threads = int(os.environ["DPAUDIT_THREADS"])
        except ValueError:
            threads = 0
        if threads < 1:
            raise DpauditError(f"DPAUDIT_THREADS={os.environ['DPAUDIT_THREADS']!r}: expected a positive integer.")
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        threads = int(os.environ["OMP_NUM_THREADS"])
    threads = threads or usable_cpus()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads
