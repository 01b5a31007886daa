"""Starting a training run and releasing its samples: the secret seed kept for a resumption,
the clean-up after the fit, and the manifest written beside the samples."""

import math

import pytest

from dpaudit.generators import DPMERF, SECRET_SEED_FILE, TrainingRun, fit_with_checkpoints, secret_seed, write_samples
from dpaudit.images import load_images
from dpaudit.manifest import read_manifest
from dpaudit.privacy import PrivacyBudget


def test_the_secret_seed_is_kept_until_the_run_is_fitted(digits, tmp_path):
    checkpoint_dir = tmp_path / "ck"
    seed = secret_seed(checkpoint_dir)
    assert 0 <= seed < 2**40 and (checkpoint_dir / SECRET_SEED_FILE).read_text() == str(seed)
    assert secret_seed(checkpoint_dir) == seed  # what an interrupted run, started again, reads
    assert secret_seed(tmp_path / "other") != seed
    fit_with_checkpoints(DPMERF, digits.members, PrivacyBudget(1.0, 1e-5), seed, overrides=DPMERF.test_overrides,
                         checkpoint_dir=checkpoint_dir)
    assert not checkpoint_dir.exists()  # left empty: removed


def test_a_checkpoint_folder_holding_other_files_is_kept(digits, tmp_path):
    secret_seed(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    fit_with_checkpoints(DPMERF, digits.members, PrivacyBudget(1.0, 1e-5), 0, overrides=DPMERF.test_overrides,
                         checkpoint_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("epsilon", [1.0, math.inf])
def test_the_manifest_states_the_claim_and_withholds_the_seed_of_a_private_run(digits, tmp_path, epsilon):
    budget = PrivacyBudget(epsilon, 1e-5)
    generator = DPMERF.from_options(DPMERF.test_overrides).fit(digits.members, budget, seed=7)
    run = TrainingRun(budget, "digits", "digits:s0", digits.members.fingerprint(), seed=7)
    written = write_samples(generator, run, tmp_path, num=20, labels="proportional", seed=7, fmt="npz")
    assert written == tmp_path / "images.npz" and len(load_images(written)) == 20
    manifest = read_manifest(tmp_path)
    private = math.isfinite(epsilon)
    assert manifest.epsilon == (generator.privacy_report()["epsilon"] if private else None)
    assert manifest.delta == (1e-5 if private else None)
    assert manifest.seed == (None if private else 7)
    assert (manifest.dataset, manifest.split_id) == ("digits", "digits:s0")
    assert manifest.details["labels"] == "proportional" and manifest.details["config"]["steps"] == generator.config.steps
    assert manifest.details["members_fingerprint"] == digits.members.fingerprint()
