"""`dpaudit demo` alone and beside busy processes: how the thread choice survives a shared machine.

    python benchmarks/bench_threads.py --busy 0 1 2 [--dpaudit-path OLD_CHECKOUT] [--repeat 1]
    python benchmarks/bench_threads.py --busy 0 --wait-policies default ACTIVE --repeat 3

Each busy process is a pure-Python loop that keeps one core busy (what another job on a laptop
or CI runner does). The demo runs in a fresh process with a fresh user cache; the table gives its
wall time, its CPU time (user + system) and the ratio to the run alone. `--dpaudit-path` runs
another checkout of dpaudit (through PYTHONPATH), e.g. the code before a change. The user's
OMP_NUM_THREADS / OMP_WAIT_POLICY / DPAUDIT_THREADS are removed, so each version makes its
own choice. `--wait-policies` runs each row under each OpenMP wait policy (`default`: dpaudit's
choice, else the value given to OMP_WAIT_POLICY), the policies taking turns run by run, so that
a slow spell of the machine falls on both.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPIN = "while True:\n    pass\n"


def run_demo(env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `dpaudit demo` in a fresh folder and cache."""
    with tempfile.TemporaryDirectory() as scratch:
        env = dict(env, DPAUDIT_CACHE=str(Path(scratch) / "cache"))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "dpaudit"), "demo", "--out", str(Path(scratch) / "demo")],
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dpaudit-path", help="a checkout of dpaudit to run instead of the installed one")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--wait-policies", nargs="+", default=["default"],
                        help="OMP_WAIT_POLICY values to compare: default (dpaudit's own choice, PASSIVE), ACTIVE, "
                             "PASSIVE, or unset (libgomp's own default: spin a while, then sleep; set as an invalid "
                             "value, which libgomp ignores with a warning, since dpaudit fills in an absent one)")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "DPAUDIT_THREADS")}
    if args.dpaudit_path:
        env["PYTHONPATH"] = args.dpaudit_path
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load before: {os.getloadavg()[0]:.2f}, "
          f"dpaudit from {args.dpaudit_path or 'the installed package'}")
    values = {"default": None, "unset": "libgomp-default"}
    envs = {policy: env if policy == "default" else dict(env, OMP_WAIT_POLICY=values.get(policy, policy))
            for policy in args.wait_policies}
    print("\n| busy processes | wait policy | demo wall, s (best; every run) | demo CPU, s | wall / alone |\n"
          "|---|---|---|---|---|")
    alone = {}
    for busy in args.busy:
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(busy)]
        try:
            runs = {policy: [] for policy in envs}
            for _ in range(args.repeat):
                for policy, policy_env in envs.items():  # the policies take turns
                    runs[policy].append(run_demo(policy_env))
        finally:
            for p in spinners:
                p.kill()
                p.wait()
        for policy, policy_runs in runs.items():
            wall = min(w for w, _ in policy_runs)
            cpu = min(c for _, c in policy_runs)
            alone.setdefault(policy, wall if busy == 0 else None)
            ratio = f"{wall / alone[policy]:.2f}" if alone[policy] else "-"
            every = ", ".join(f"{w:.1f}" for w, _ in policy_runs)
            print(f"| {busy} | {policy} | {wall:.1f} ({every}) | {cpu:.1f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
