"""End-to-end `dpaudit audit-training` on MNIST, as a user runs it: one fresh CLI process per
case, its wall and CPU time, peak memory, and the bounds, ceiling and verdict of its result.json.

    DPAUDIT_DATA=../shared/data python benchmarks/bench_training_audit_mnist.py [--cases merf,gan,runs]

Cases: `merf` (dp-merf, defaults, standard profile, epsilon 1), `gan` (dpsgd-gan, defaults,
standard, epsilon 1), `runs` (what --runs 4 gains: dp-merf with fewer steps, quick profile,
--runs 1, --runs 4 locally and --runs 4 on a local Ray cluster). Run it alone on the machine.
Prints a Markdown table (benchmarks/RESULTS.md, "The training audit"). CPU time and peak memory
are those of the CLI process and the processes it waits for; Ray's workers are not among them.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MERF_SHORT = ("--set", "steps=600")
CASES = {
    "merf": [("dp-merf, defaults", ["--generator", "dp-merf", "--profile", "standard"])],
    "gan": [("dpsgd-gan, defaults", ["--generator", "dpsgd-gan", "--profile", "standard"])],
    "runs": [
        ("dp-merf steps=600, --runs 1", ["--generator", "dp-merf", *MERF_SHORT, "--profile", "quick"]),
        ("dp-merf steps=600, --runs 4 (local)", ["--generator", "dp-merf", *MERF_SHORT, "--profile", "quick",
                                                 "--runs", "4"]),
        ("dp-merf steps=600, --runs 4 (ray, 2 CPUs)", ["--generator", "dp-merf", *MERF_SHORT, "--profile", "quick",
                                                       "--runs", "4", "--backend", "ray"]),
    ],
}


def run_case(args: list[str], out: Path) -> tuple[float, float, float, int]:
    """(wall s, CPU s, peak RSS MiB, exit code) of one `dpaudit audit-training` process."""
    command = [str(Path(sys.executable).with_name("dpaudit")), "audit-training", "--dataset", "mnist", "--epsilon", "1",
               "--seed", "0", "--out", str(out), *args]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.stderr.write(process.stderr.read().decode()[-3000:])
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default="merf,gan,runs")
    args = parser.parse_args()
    print("| case | canaries | one-run | f-DP | ceiling | AUC | verdict | wall, min | CPU, min | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for key in args.cases.split(","):
        for name, options in CASES[key]:
            out = Path(tempfile.mkdtemp(prefix="ta-mnist-")) / "audit"
            wall, cpu, peak, code = run_case(options, out)
            if code != 0:
                print(f"| {name} | failed (exit {code}) | | | | | | {wall / 60:.1f} | {cpu / 60:.1f} | {peak:.0f} |")
                continue
            check = json.loads((out / "result.json").read_text())["checks"]["training_audit"]
            m = {k: v["value"] for k, v in check["metrics"].items()}
            canaries = check["details"]["runs"] * check["details"]["canaries_per_run"]
            print(f"| {name} | {canaries:,} | {m['one_run_bound']:.2f} | {m['fdp_bound']:.2f} | {m['ceiling']:.2f} | "
                  f"{m['auc']:.3f} | {check['details']['verdict']} | {wall / 60:.1f} | {cpu / 60:.1f} | {peak:.0f} |",
                  flush=True)
            shutil.rmtree(out.parent)


if __name__ == "__main__":
    main()
