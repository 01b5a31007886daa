"""Compare two result.json files of the same audit: every number and text, except what may differ
between two runs of the same code (timings: `seconds`, `wall_time_s`; `created`, at any depth)
and what records the audit rather than measures it (the `settings` record, the checks' declared
title, question and headlines).

    python benchmarks/compare_results.py BEFORE/result.json AFTER/result.json

Prints every other difference by its path, split into changes of an existing value (metrics,
details, figures, provenance) and keys only one side has. Exit code 1 when an existing metric
changed or disappeared, else 0. Used for the architecture issue's acceptance: the same known-answer
runs before and after a refactoring give the same result.json.
"""

from __future__ import annotations

import argparse
import json
import sys

ANYWHERE = {"created", "seconds", "wall_time_s"}
RECORDS = {"settings"}
PER_CHECK = {"title", "question", "headlines"}


def _without(doc, keys: set[str]):
    if isinstance(doc, dict):
        return {k: _without(v, keys) for k, v in doc.items() if k not in keys}
    if isinstance(doc, list):
        return [_without(v, keys) for v in doc]
    return doc


def _strip(result: dict) -> dict:
    result = {k: v for k, v in _without(result, ANYWHERE).items() if k not in RECORDS}
    result["checks"] = {
        name: {k: v for k, v in check.items() if k not in PER_CHECK} for name, check in result.get("checks", {}).items()
    }
    return result


def differences(before, after, path: str = "") -> list[tuple[str, str]]:
    """(path, kind) for every leaf that differs: kind is "changed", "removed" or "added"."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in before.keys() | after.keys():
            sub = f"{path}.{key}" if path else str(key)
            if key not in after:
                out.append((sub, "removed"))
            elif key not in before:
                out.append((sub, "added"))
            else:
                out += differences(before[key], after[key], sub)
        return sorted(out)
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [d for i, (b, a) in enumerate(zip(before, after)) for d in differences(b, a, f"{path}[{i}]")]
    return [] if before == after else [(path, "changed")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    args = parser.parse_args()
    with open(args.before) as fb, open(args.after) as fa:
        before, after = _strip(json.load(fb)), _strip(json.load(fa))
    diffs = differences(before, after)
    metric_changes = [(p, k) for p, k in diffs if ".metrics." in p and k != "added"]
    for path, kind in diffs:
        print(f"{kind:8} {path}")
    print(f"{len(diffs)} differences; {len(metric_changes)} in existing metrics")
    return 1 if metric_changes else 0


if __name__ == "__main__":
    sys.exit(main())
