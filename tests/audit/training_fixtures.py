"""Trainers with known answers for the training audit: test fixtures, not user-facing generators."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from dpaudit.audit.trainers import GeneratorTrainer, Release
from dpaudit.images import ImageSet
from dpaudit.manifest import Manifest
from dpaudit.privacy import PrivacyBudget


class FixtureTrainer:
    """What every fixture trainer shares: its name, and no options to check."""

    name = "fixture"

    def describe(self) -> str:
        return self.name

    def check(self) -> None:
        pass


@dataclass(frozen=True)
class Copier(FixtureTrainer):
    """Releases its training data plus a little Gaussian noise: no privacy at all."""

    name = "copier"
    noise: float = 0.02

    def train(self, training: ImageSet, budget: PrivacyBudget, seed: int, workdir: Path, num_samples: int) -> Release:
        g = torch.Generator().manual_seed(seed)
        x = (training.x + self.noise * torch.randn(training.x.shape, generator=g)).clamp(0, 1)
        idx = torch.arange(num_samples) % len(x)
        synthetic = ImageSet(x[idx], training.y[idx], training.num_classes, name="copies")
        return Release(synthetic, Manifest.new("copier", epsilon=budget.epsilon, delta=budget.delta))


@dataclass(frozen=True)
class DataIgnorer(FixtureTrainer):
    """Releases images that do not depend on its data at all (uniform noise): epsilon 0 in truth."""

    name = "data-ignorer"

    def train(self, training: ImageSet, budget: PrivacyBudget, seed: int, workdir: Path, num_samples: int) -> Release:
        g = torch.Generator().manual_seed(seed)
        x = torch.rand((num_samples, *training.shape), generator=g)
        y = torch.arange(num_samples) % int(training.num_classes)
        return Release(ImageSet(x, y, training.num_classes, name="noise"), None)


@dataclass(frozen=True)
class NoiselessGenerator(GeneratorTrainer):
    """A broken copy of a reference generator: trained without privacy (no noise; for DP-SGD
    generators clipping is off through a huge max_grad_norm override) while the claim under test
    stays what the audit was given."""

    def train(self, training: ImageSet, budget: PrivacyBudget, seed: int, workdir: Path, num_samples: int) -> Release:
        release = super().train(training, PrivacyBudget(math.inf, budget.delta), seed, workdir, num_samples)
        release.manifest.epsilon, release.manifest.delta = budget.epsilon, budget.delta  # the false claim
        return release


# A third party's training script, run by CommandTrainer: it copies its training data (npz in, npz out).
COPY_SCRIPT = """
import argparse, json, os, numpy as np
p = argparse.ArgumentParser()
p.add_argument("--data"); p.add_argument("--out"); p.add_argument("--epsilon", type=float)
p.add_argument("--seed", type=int); p.add_argument("--mode", default="copy")
a = p.parse_args()
print("training on", a.data)
if a.mode == "fail":
    raise SystemExit("out of memory, pretend")
if a.mode == "nothing":
    raise SystemExit(0)
d = np.load(a.data)
x = d["x"]
if a.mode == "misshapen":
    x = x[:, :4, :4]
np.savez(os.path.join(a.out, "samples.npz"), x=x, y=d["y"])
json.dump({"generator": "copy-script", "epsilon": a.epsilon, "delta": 1e-5}, open(os.path.join(a.out, "manifest.json"), "w"))
"""


def copy_command(tmp_path: Path, mode: str = "copy") -> str:
    """A --command template running COPY_SCRIPT (written to tmp_path) in `mode`."""
    script = tmp_path / "train.py"
    script.write_text(COPY_SCRIPT)
    return f"{sys.executable} {script} --data {{members}} --out {{out}} --epsilon {{epsilon}} --seed {{seed}} --mode {mode}"
