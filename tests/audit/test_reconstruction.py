"""Reconstruction checks: leakage is high for a memorizer synthetic set (synthetic = members) and
low for a disjoint real set (the digits test split: neither members nor holdout); a new attack
is one registered class."""

import base64
import io
from dataclasses import dataclass, replace

import numpy as np
import pytest
from PIL import Image

from dpaudit.attacks import RECONSTRUCTION_ATTACKS
from dpaudit.attacks.gan_attack import GANAttackConfig
from dpaudit.attacks.gradient_matching import InversionConfig
from dpaudit.attacks.memorization import MemorizationConfig
from dpaudit.attacks.reconstruction import Reconstruction, ReconstructionAttack, register_reconstruction_attack
from dpaudit.audit import reconstruction as rc
from dpaudit.audit.context import AuditContext
from dpaudit.audit.pipeline import CHECKS
from dpaudit.audit.profiles import QUICK
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet
from dpaudit.metric import Metric

# Quick-profile budgets cut down for tests (the TSTR/TRTR classifiers train 100 steps).
SMALL = replace(
    QUICK,
    classifiers=replace(QUICK.classifiers, min_steps=100),
    gradient_matching=InversionConfig(method="geiping", iterations=100, restarts=1, batches=3, batch_size=1),
    gan_attack=GANAttackConfig(steps=60, n_prototypes=1),
    memorization=MemorizationConfig(method="correlation", n_secrets=6, epochs=12, max_train=400),
    grid_rows=4,
)
NAMES = ("gradient_matching", "gan_attack", "memorization")


@pytest.fixture(scope="module")
def results(digits):
    """All three checks on a memorizer set and on a disjoint real set."""
    out = {}
    for name, synthetic in (("memorizer", digits.members), ("disjoint", digits.test)):
        ctx = AuditContext(synthetic, digits, SMALL, seed=0)
        out[name] = {check: CHECKS[check](ctx) for check in NAMES}
    return out


def _value(result, metric):
    return result.metrics[metric].value


def test_every_registered_attack_is_a_check_with_its_declaration():
    assert list(RECONSTRUCTION_ATTACKS) == list(NAMES)
    for name, attack in RECONSTRUCTION_ATTACKS.items():
        spec = CHECKS[name]
        assert (spec.title, spec.question, spec.needs_labels) == (attack.title, attack.question, True)
        assert spec.headlines == ("max_member_ssim",)
        assert isinstance(QUICK.settings(name), attack.Config)


def test_memorization_leaks_what_the_synthetic_set_holds(results):
    memorizer = results["memorizer"]["memorization"]
    disjoint = results["disjoint"]["memorization"]
    # The decoding itself works in both cases (attack success against the synthetic images).
    assert _value(memorizer, "decode_psnr") > 20 and _value(disjoint, "decode_psnr") > 15
    # A memorizer's decoded images are members: all above the near-copy threshold.
    assert _value(memorizer, "share_above_threshold") == 1.0
    assert _value(memorizer, "mean_member_psnr") > 20
    # Decoded test digits are no closer to the members than holdout digits are.
    assert _value(disjoint, "share_above_threshold") == 0.0
    assert _value(disjoint, "mean_member_psnr") < disjoint.metrics["mean_member_psnr"].baseline
    assert _value(memorizer, "mean_member_ssim") > _value(disjoint, "mean_member_ssim") + 0.1
    # The control (the same trainer on the members) leaks fully in both audits.
    assert _value(disjoint, "control_share_above_threshold") == 1.0


def test_gradient_matching_leaks_members_only_for_a_memorizer(results):
    memorizer = results["memorizer"]["gradient_matching"]
    disjoint = results["disjoint"]["gradient_matching"]
    # Both inversions work: the reconstructions resemble the attacked images (noise: about 5 dB).
    # The inversion is chaotic in rounding (another CPU gives other kernels): 13.7 to 18 dB seen.
    assert _value(memorizer, "batch_psnr") > 12 and _value(disjoint, "batch_psnr") > 12
    # Memorizer: the attacked image is a member, so the nearest member is at least as close.
    assert memorizer.details["label_accuracy"] == 1.0 and "iDLG" in memorizer.details["labels"]
    for member, batch in zip(memorizer.details["member_psnr"], memorizer.details["batch_psnr"]):
        assert member >= batch - 1e-3
    # Disjoint: reconstructions of test digits are closer to their originals than to any member.
    assert _value(disjoint, "mean_member_psnr") < _value(disjoint, "batch_psnr") - 1
    assert _value(memorizer, "mean_member_psnr") > _value(disjoint, "mean_member_psnr") + 1
    # synthetic = members: the TSTR classifier IS the members-trained control, so are the numbers.
    for key in ("max_member_ssim", "mean_member_psnr", "share_above_threshold"):
        assert _value(memorizer, f"control_{key}") == pytest.approx(_value(memorizer, key))


def test_every_check_reports_metrics_with_baselines_and_a_grid(results):
    for checks in results.values():
        for name, result in checks.items():
            assert result.check == name
            for key in ("max_member_ssim", "mean_member_ssim", "max_member_psnr", "mean_member_psnr", "share_above_threshold"):
                metric = result.metrics[key]
                assert np.isfinite(metric.value) and metric.baseline is not None and metric.direction == "lower"
                assert "." not in key
            image = Image.open(io.BytesIO(base64.b64decode(result.figures["grid"]["png"])))
            assert image.width == 3 * 24 + 4 * 2  # reconstruction | nearest real | nearest synthetic
    gan = results["memorizer"]["gan_attack"]
    assert len(gan.details["prototype_labels"]) == 10
    assert 0.0 <= _value(gan, "target_confidence") <= 1.0


def test_same_seed_same_numbers(digits):
    def run():
        ctx = AuditContext(digits.test, digits, SMALL, seed=3)
        return {k: m.value for k, m in CHECKS["memorization"](ctx).metrics.items()}

    assert run() == run()


def test_unlabelled_synthetic_set_is_refused(digits):
    unlabelled = ImageSet(digits.test.x[:50], name="unlabelled", source="unlabelled.npz")
    ctx = AuditContext(unlabelled, digits, SMALL, seed=0)
    with pytest.raises(DpauditError, match="unlabelled.npz"):
        CHECKS["memorization"](ctx)
    with pytest.raises(DpauditError, match="unlabelled.npz"):
        CHECKS["gradient_matching"](ctx)


@dataclass(frozen=True)
class CopyConfig:
    count: int = 5


class CopyTrainingImages(ReconstructionAttack):
    """A toy attack that 'reconstructs' the first images of the victim's training set exactly."""

    name = "toy_copy"
    title = "Toy copy"
    question = "Does the runner score an attack that returns training images as leaking?"
    Config = CopyConfig
    counts = describes = control_describes = "copies"
    control_is = "copies of the members"
    caption = control_caption = "copies"

    def reconstruct(self, victim, config, progress):
        images = victim.images.x[: config.count]
        success = {"control_copied" if victim.is_control else "copied": Metric(float(len(images)), "info", "images copied")}
        return Reconstruction(images, victim.images.y[: config.count], success, {"side": victim.side})


def test_a_registered_toy_attack_runs_as_a_check(digits, monkeypatch):
    monkeypatch.setitem(RECONSTRUCTION_ATTACKS, "toy_copy", None)  # removed again after the test
    register_reconstruction_attack(CopyTrainingImages)  # what a new attack's module does
    spec = rc.check_of(RECONSTRUCTION_ATTACKS["toy_copy"])
    memorizer = spec(AuditContext(digits.members, digits, SMALL))
    disjoint = spec(AuditContext(digits.test, digits, SMALL))
    assert memorizer.title == "Toy copy" and memorizer.headlines == ["max_member_ssim"]
    assert _value(memorizer, "copied") == 5 and _value(memorizer, "control_copied") == 5
    # copies of members are members; copies of unseen test digits are not
    assert _value(memorizer, "share_above_threshold") == 1.0 and _value(memorizer, "mean_member_psnr") == pytest.approx(80.0)
    assert _value(disjoint, "mean_member_psnr") < 40 and _value(disjoint, "max_member_ssim") < 1.0
    assert _value(disjoint, "control_share_above_threshold") == 1.0
    assert memorizer.details["side"] == "synthetic" and memorizer.details["control"]["side"] == "members"
