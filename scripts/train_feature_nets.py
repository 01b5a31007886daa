"""Reproduce the LeNet feature nets shipped in dpaudit/weights/ and their index lenet.json.

    DPAUDIT_DATA=/path/to/data python scripts/train_feature_nets.py [--datasets digits mnist fashion-mnist] [--check]

Each net is trained on its dataset's member split (load_split(name, seed=0)) with
dpaudit.audit.features.LENET_RECIPE, on the CPU with one thread (thread count changes the
floating-point sums, hence the weights). `--check` trains again and compares the sha256 with
the recorded one instead of writing anything.
"""

from __future__ import annotations

import argparse
import io
import json
import platform

import torch

from dpaudit.audit.features import LENET_RECIPE, WEIGHTS_DIR, WEIGHTS_INDEX, file_sha256, lenet_epochs, train_lenet
from dpaudit.audit.fidelity import fid
from dpaudit.datasets import load_split
from dpaudit.nets import accuracy

DATASETS = ("digits", "mnist", "fashion-mnist")
ABOUT = (
    "LeNet-5-style feature nets (dpaudit.nets.LeNet; features = 84-dim penultimate layer), one per built-in "
    "dataset, trained on its member split load_split(name, seed=0) by scripts/train_feature_nets.py "
    "(CPU, 1 thread). dpaudit verifies each file's sha256 before loading it."
)


def train_one(name: str) -> tuple[bytes, dict]:
    ref = load_split(name, seed=0)
    model = train_lenet(ref.members, progress=name)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    data = buffer.getvalue()
    entry = {
        "file": f"lenet-{name}.pt",
        "sha256": file_sha256(data),
        "bytes": len(data),
        "split_id": ref.split_id,
        "in_channels": ref.members.shape[0],
        "num_classes": ref.members.num_classes,
        "epochs": lenet_epochs(len(ref.members)),
        "member_accuracy": round(accuracy(model, ref.members.x, ref.members.y), 4),
        "holdout_accuracy": round(accuracy(model, ref.holdout.x, ref.holdout.y), 4),
        "test_accuracy": round(accuracy(model, ref.test.x, ref.test.y), 4),
        **sanity_fids(model, ref),
    }
    return data, entry


def sanity_fids(model: torch.nn.Module, ref) -> dict:
    """FID in this net's feature space of the holdout and of uniform noise (as many images)
    against the members: real unseen data must score far below noise."""
    noise = torch.rand(ref.holdout.x.shape, generator=torch.Generator().manual_seed(0))
    images = {"members": ref.members.x, "holdout": ref.holdout.x, "noise": noise}
    with torch.no_grad():
        feats = {role: torch.cat([model.features(x[i : i + 1000]) for i in range(0, len(x), 1000)]) for role, x in images.items()}
    return {
        "fid_holdout_vs_members": round(fid(feats["members"], feats["holdout"]), 4),
        "fid_noise_vs_members": round(fid(feats["members"], feats["noise"]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--check", action="store_true", help="retrain and compare sha256 with lenet.json; write nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    index = json.loads(WEIGHTS_INDEX.read_text()) if WEIGHTS_INDEX.exists() else {"weights": {}}
    failed = False
    for name in args.datasets:
        data, entry = train_one(name)
        print(f"{name}: test accuracy {entry['test_accuracy']:.4f}, sha256 {entry['sha256']}")
        if args.check:
            recorded = index["weights"].get(name, {}).get("sha256")
            ok = recorded == entry["sha256"]
            failed |= not ok
            print(f"  {'matches' if ok else 'DIFFERS FROM'} the recorded sha256 {recorded}")
            continue
        (WEIGHTS_DIR / entry["file"]).write_bytes(data)
        index["weights"][name] = entry
    if not args.check:
        index.update(
            about=ABOUT,
            recipe=LENET_RECIPE,
            made_with={"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(), "num_threads": 1},
        )
        index = {k: index[k] for k in ("about", "recipe", "made_with", "weights")}
        WEIGHTS_INDEX.write_text(json.dumps(index, indent=2) + "\n")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
