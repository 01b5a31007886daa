"""cProfile of one quick audit of MNIST's 10,000 test images against MNIST (a fresh process):
where the time goes, by function, cumulative (issue 18, item 3).

    DPAUDIT_DATA=../shared/data python benchmarks/profile_quick.py [--lines 90]

Prints the total and pstats' cumulative table; run from the repository root, alone.
"""

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dpaudit.audit.pipeline import evaluate  # noqa: E402
from dpaudit.datasets import load_split  # noqa: E402
from dpaudit.memory import keep_freed_memory  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=90)
    args = parser.parse_args()
    keep_freed_memory()  # as the dpaudit command does
    reference = load_split("mnist")
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    evaluate(reference.test, reference, profile="quick", seed=0, progress=False)
    profiler.disable()
    print(f"total {time.perf_counter() - start:.1f} s")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.lines)


if __name__ == "__main__":
    main()
