"""Write the cache entries shipped in dpaudit/weights/cache/ and their index.json.

    DPAUDIT_DATA=/path/to/data python scripts/ship_cache.py [--datasets digits mnist fashion-mnist] [--profiles quick]

For each built-in dataset's default split (load_split(name, seed=0)) and each profile, the
TRTR ceiling (the DPDM CNN trained on the members, also the attacks' control model) is trained
exactly as `dpaudit evaluate --seed 0` trains it on the CPU with torch's default threads (in
bfloat16 where this CPU computes it natively, as the profile's `precision = "auto"` does), and
stored under the name the user cache would give it. The name hashes the members' pixels, the
profile's settings, the seed and the torch version, so an entry is only ever read by an audit
that would have computed the same thing; any other audit trains its own as before.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import tempfile

import torch

from dpaudit.audit import classifiers
from dpaudit.audit.profiles import get_profile
from dpaudit.cache import SHIPPED_DIR, SHIPPED_INDEX, shipped_name
from dpaudit.datasets import load_split
from dpaudit.memory import keep_freed_memory
from dpaudit.nets import accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist", "fashion-mnist"])
    parser.add_argument("--profiles", nargs="+", default=["quick"])
    args = parser.parse_args()
    keep_freed_memory()  # as the dpaudit command does
    index = json.loads(SHIPPED_INDEX.read_text()) if SHIPPED_INDEX.is_file() else {"entries": {}}
    index["about"] = __doc__.split("\n\n")[2].replace("\n", " ").strip()
    device = torch.device("cpu")
    for name in args.datasets:
        reference = load_split(name, seed=0)
        for profile in args.profiles:
            config = get_profile(profile).classifiers
            with tempfile.TemporaryDirectory() as scratch:
                os.environ["DPAUDIT_CACHE"] = scratch  # a fresh cache: train, never read
                path = classifiers.trtr_cache_path(reference.members, config, 0, device)
                (SHIPPED_DIR / shipped_name(path)).unlink(missing_ok=True)  # else it would be read, not trained
                fitted = classifiers.cached_trtr(reference.members, config, 0, device)
                target = SHIPPED_DIR / shipped_name(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
            data = target.read_bytes()
            index["entries"][shipped_name(path)] = {
                "sha256": hashlib.sha256(data).hexdigest(),
                "what": "TRTR ceiling (DPDM CNN trained on the members)",
                "dataset": name, "split_id": reference.split_id, "profile": profile, "seed": 0,
                "test_accuracy": accuracy(fitted.model, reference.test.x, reference.test.y),
                "torch": torch.__version__, "machine": platform.machine(), "threads": torch.get_num_threads(),
                "precision": fitted.precision,
            }
            print(f"{name} {profile}: {target.name} ({len(data) / 1e6:.2f} MB), "
                  f"test accuracy {index['entries'][shipped_name(path)]['test_accuracy']:.4f}")
    SHIPPED_INDEX.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
