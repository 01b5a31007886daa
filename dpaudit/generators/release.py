"""How a fitted generator's training run is started and its samples are released: the secret
seed, training with checkpoints (cleaned up once the run has finished), what the run was
trained on and under (`TrainingRun`), and writing the samples with their manifest.json."""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dpaudit import distributed
from dpaudit.errors import DpauditError
from dpaudit.generators.base import Checkpointer, Generator
from dpaudit.images import ImageSet, save_images
from dpaudit.manifest import Manifest
from dpaudit.privacy import PrivacyBudget

SECRET_SEED_FILE = "secret-seed"


def secret_seed(checkpoint_dir: Path) -> int:
    """A seed from the OS's entropy, kept beside the checkpoint (as private as the data) so that
    an interrupted run resumes with it. Anyone who knows the seed of a DP run can subtract its
    noise, so by default nobody does."""
    path = Path(checkpoint_dir) / SECRET_SEED_FILE
    if path.is_file():
        return int(path.read_text())
    # 40 bits: too many to try one by one, and room for the generators' seed arithmetic
    # (dpsgd-gan derives per-step seeds as seed * 1,000,003 + step within torch's 64 bits).
    seed = secrets.randbits(40)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(seed))
    return seed


def fit_with_checkpoints(
    cls: type[Generator],
    members: ImageSet,
    budget: PrivacyBudget,
    seed: int,
    *,
    overrides: Sequence[str] | dict[str, str] = (),
    checkpoint_dir: Path,
    device: str = "cpu",
    progress: bool = False,
) -> Generator:
    """`cls` with `overrides` (`key=value`) fitted on the members under the budget, saving
    checkpoints in `checkpoint_dir`: started again with the same arguments after an
    interruption, it resumes. Once fitted, the secret-seed file and the checkpoint folder, if
    that is left empty, are removed."""
    checkpoint_dir = Path(checkpoint_dir)
    try:
        generator = cls.from_options(overrides, device=device, checkpoint=Checkpointer(checkpoint_dir), progress=progress)
        generator.fit(members, budget, seed)
    except DpauditError:
        # A refused run (a bad option, a budget too small to calibrate) saved no training state:
        # leave nothing behind. An interrupted one keeps its seed and state to resume.
        if not (checkpoint_dir / Checkpointer.FILE).exists():
            _finish(checkpoint_dir)
        raise
    _finish(checkpoint_dir)
    return generator


def _finish(checkpoint_dir: Path) -> None:
    """Remove the secret-seed file, and the checkpoint folder where that leaves it empty (rank 0
    alone under torchrun: the others would race it)."""
    if not distributed.is_main():
        return
    (checkpoint_dir / SECRET_SEED_FILE).unlink(missing_ok=True)
    if checkpoint_dir.is_dir() and not any(checkpoint_dir.iterdir()):
        checkpoint_dir.rmdir()


@dataclass(frozen=True)
class TrainingRun:
    """What a fitted generator was trained on and under, for the manifests of its releases:
    the budget, the dataset (a built-in name or the members' folder), the exact split (None for
    the user's own members), the members' fingerprint and the training seed. The seed goes into
    a manifest (or a saved generator) only for a non-private run: anyone who knows the seed of a
    DP run can subtract its noise (a private run loaded from a file has seed None)."""

    budget: PrivacyBudget
    dataset: str
    split_id: str | None
    members_fingerprint: str
    seed: int | None

    @property
    def public_seed(self) -> int | None:
        """The training seed where it may be published (a non-private run), else None."""
        return None if self.budget.is_private else self.seed


def release_manifest(generator: Generator, budget: PrivacyBudget, *, dataset: str | None = None,
                     split_id: str | None = None, seed: int | None = None, **details) -> Manifest:
    """The manifest of a fitted generator's release: the accountant's epsilon and the budget's
    delta (none for a non-private run), its privacy report and config, and `details`."""
    report = generator.privacy_report()
    return Manifest.new(
        generator.name,
        epsilon=report["epsilon"] if budget.is_private else None,
        delta=budget.delta if budget.is_private else None,
        dataset=dataset,
        split_id=split_id,
        seed=seed,
        details={**report, **details, "config": dataclasses.asdict(generator.config)},
    )


def write_samples(generator: Generator, run: TrainingRun, out: Path, *, num: int, labels: str = "balanced",
                  seed: int, fmt: str = "png", **details) -> Path:
    """Sample `num` images of a fitted generator (`labels`: balanced or proportional; `seed`: the
    sampling seed) and write them (`fmt`: png or npz) and their manifest.json to `out`; returns
    where the images went. The manifest says what `run` trained on, its seed only where public,
    and `details`."""
    images = generator.sample(num, labels, seed=seed)
    written = save_images(images, out, fmt)
    release_manifest(
        generator, run.budget, dataset=run.dataset, split_id=run.split_id, seed=run.public_seed,
        labels=labels, members_fingerprint=run.members_fingerprint, **details,
    ).write(out)
    return written
