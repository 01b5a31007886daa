"""The training audit's known answers: trainers whose true privacy is known, audited on digits."""

import json
import math

import numpy as np
import pytest

from dpaudit.audit.trainers import CommandTrainer, GeneratorTrainer
from dpaudit.audit.training_audit import TrainingAuditConfig, audit_training, plan_runs
from dpaudit.datasets import load_split
from dpaudit.errors import DpauditError
from dpaudit.privacy import PrivacyBudget
from tests.audit.training_fixtures import Copier, DataIgnorer, NoiselessGenerator, copy_command

QUICK = TrainingAuditConfig(canaries=200, features=False)


@pytest.fixture(scope="module")
def digits():
    return load_split("digits")


def audit(trainer, digits, epsilon, config=QUICK, **kwargs):
    return audit_training(trainer, digits, PrivacyBudget(epsilon, 1e-5), config=config, seed=0, progress=False, **kwargs)


def check_of(result):
    return result.checks["training_audit"]


@pytest.mark.parametrize("kind", ["mislabeled", "clean"])
def test_a_copier_claiming_epsilon_1_is_refuted(digits, kind):
    check = check_of(audit(Copier(), digits, 1.0, TrainingAuditConfig(canaries=200, kind=kind, features=False)))
    assert check.details["verdict"] == "refuted"
    assert check.metrics["epsilon_lower_bound"].value > 1.0
    assert check.metrics["auc"].value > 0.99
    # a perfect attack: the bound reaches the ceiling of 200 canaries
    assert check.metrics["epsilon_lower_bound"].value == pytest.approx(check.metrics["ceiling"].value, rel=0.05)
    assert "PRIVACY CLAIM REFUTED" in check.details["claim_warning"]


def test_a_trainer_that_ignores_its_data_is_consistent_with_any_claim(digits):
    check = check_of(audit(DataIgnorer(), digits, 0.5))
    assert check.details["verdict"] == "consistent"
    assert check.metrics["epsilon_lower_bound"].value <= 0.5
    assert abs(check.metrics["auc"].value - 0.5) < 0.15


def test_too_few_canaries_to_refute_epsilon_10_is_inconclusive(digits):
    result = audit(Copier(), digits, 10.0)
    check = check_of(result)
    assert check.details["verdict"] == "inconclusive"
    assert check.metrics["ceiling"].value < 10
    assert "INCONCLUSIVE" in result.warnings[0]
    needed = check.details["canaries_needed"]
    assert needed is None or needed > 200


def overrides(name, **changes):
    from dpaudit.generators import get_generator

    return tuple(f"{k}={v}" for k, v in {**get_generator(name).test_overrides, **changes}.items())


def test_dp_merf_at_epsilon_1_is_consistent(digits):
    check = check_of(audit(GeneratorTrainer("dp-merf", overrides("dp-merf", steps=50)), digits, 1.0))
    assert check.details["verdict"] == "consistent"
    assert check.metrics["one_run_bound"].value <= 1.0 and check.metrics["fdp_bound"].value <= 1.0
    assert check.details["run_details"][0]["epsilon_reported"] <= 1.0 + 1e-9
    if __import__("importlib").util.find_spec("dp_accounting"):  # the declared history, re-accounted
        assert check.details["run_details"][0]["reaccounted"]["supports_claim"]


def test_dp_merf_without_its_noise_is_not_caught_one_aggregate_hides_each_record(digits):
    # Not DP at all, but its release is one mean embedding of ~1,200 records: a canary moves it by
    # about 1/1,200, so no canary stands out in the samples. The audit cannot prove what it cannot see.
    result = audit(NoiselessGenerator("dp-merf", overrides("dp-merf", steps=50)), digits, 1.0)
    check = check_of(result)
    assert check.details["verdict"] == "consistent"
    assert check.metrics["epsilon_lower_bound"].value < 1.0
    # Its manifest is honest about the noise it added (none), and the claim re-accounted from it fails.
    if __import__("importlib").util.find_spec("dp_accounting"):
        assert check.details["run_details"][0]["reaccounted"]["supports_claim"] is False
        assert result.warnings[0].startswith("PRIVACY CLAIM NOT SUPPORTED: the manifest of run 0")


# A Lipschitz VAE that can memorise: a loose Lipschitz bound, a 2-d latent the samples cover, a
# small member set and many epochs; clipping off (max_grad_norm 1e6) in the broken copy.
# The model the audit was built with: N(0, I) prior, full-resolution decoder (8x8 digits).
MEMORISING_VAE = ("epochs=300", "batch_size=64", "lipschitz=10", "latent_std=0.1", "latent_dim=2", "prior=standard", "decoder=mlp")
SMALL = TrainingAuditConfig(canaries=200, members=100, samples=5000, features=False)


def test_a_dp_sgd_generator_with_noise_and_clipping_off_is_refuted(digits):
    trainer = NoiselessGenerator("lipschitz-vae", MEMORISING_VAE + ("max_grad_norm=1e6",))
    check = check_of(audit(trainer, digits, 1.0, SMALL))
    assert check.details["verdict"] == "refuted"
    assert check.metrics["epsilon_lower_bound"].value > 1.0


def test_the_same_generator_with_its_noise_is_consistent(digits):
    check = check_of(audit(GeneratorTrainer("lipschitz-vae", MEMORISING_VAE), digits, 1.0, SMALL))
    assert check.details["verdict"] == "consistent"
    assert check.metrics["epsilon_lower_bound"].value <= 1.0


def test_pooled_runs_draw_fresh_canaries_and_coins(digits):
    plans = plan_runs(digits, QUICK, 3, seed=5)
    assert len({tuple(p.canaries.pool_idx.tolist()) for p in plans}) == 3
    assert len({p.included.tobytes() for p in plans}) == 3
    again = plan_runs(digits, QUICK, 3, seed=5)
    assert all(np.array_equal(a.included, b.included) for a, b in zip(plans, again))
    check = check_of(audit(Copier(), digits, 1.0, QUICK, runs=2))
    assert check.metrics["ceiling"].n["canaries"] == 400
    single = check_of(audit(Copier(), digits, 1.0, QUICK))
    assert check.metrics["ceiling"].value > single.metrics["ceiling"].value  # more canaries, higher ceiling


def test_a_third_party_script_that_copies_is_refuted(digits, tmp_path):
    trainer = CommandTrainer(copy_command(tmp_path), data_format="npz")
    result = audit(trainer, digits, 1.0, log_dir=tmp_path / "logs")
    assert check_of(result).details["verdict"] == "refuted"
    assert "training on" in (tmp_path / "logs" / "run-00.log").read_text()
    assert result.manifest["details"]["runs"][0]["generator"] == "copy-script"


@pytest.mark.parametrize("mode, message", [
    ("fail", "exited with status 1; see its log"),
    ("nothing", "wrote no images"),
    ("misshapen", "shape"),
])
def test_a_failing_script_gets_one_sentence_naming_its_log(digits, tmp_path, mode, message):
    trainer = CommandTrainer(copy_command(tmp_path, mode), data_format="npz")
    with pytest.raises(DpauditError, match=message) as raised:
        audit(trainer, digits, 1.0, log_dir=tmp_path / "logs")
    assert "run 0:" in str(raised.value) and str(tmp_path / "logs" / "run-00.log") in str(raised.value)
    assert "training on" in (tmp_path / "logs" / "run-00.log").read_text()


def test_png_training_data_reaches_the_script_with_labels_csv(digits, tmp_path):
    script = tmp_path / "check.py"
    script.write_text(
        "import sys, csv, os, shutil\n"
        "rows = list(csv.reader(open(os.path.join(sys.argv[1], 'labels.csv'))))\n"
        "assert rows[0] == ['file', 'label'] and len(rows) > 1000, rows[:2]\n"
        "shutil.copytree(sys.argv[1], sys.argv[2], dirs_exist_ok=True)\n"
    )
    trainer = CommandTrainer(f"python {script} {{members}} {{out}}", data_format="png")
    assert check_of(audit(trainer, digits, 1.0)).details["verdict"] == "refuted"  # PNG round trip: exact copies


def test_bad_templates_are_refused_before_any_run(digits):
    for template, message in [("python train.py {out}", "must pass {members}"),
                              ("python train.py {members} {out} {epsilom}", "unknown placeholder"),
                              ("python 'unclosed {members} {out}", "cannot be split")]:
        with pytest.raises(DpauditError, match=message):
            audit(CommandTrainer(template), digits, 1.0)


def test_the_result_is_what_the_gate_and_report_read(digits, tmp_path):
    from dpaudit.audit.gate import apply_policy, load_policy
    from dpaudit.audit.result import load_result
    from dpaudit.reports.folder import write_audit

    result = audit(Copier(), digits, 1.0)
    result_path, report_path = write_audit(result, tmp_path)
    loaded = load_result(result_path)
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nmetric = "training_audit.epsilon_lower_bound"\nmax_from = "manifest.epsilon"\n')
    assert apply_policy(loaded, load_policy(policy)).exit_code == 1
    html = report_path.read_text()
    assert "PRIVACY CLAIM REFUTED" in html and "Canary scores" in html and "<h3>Exposed canaries</h3>" in html
    assert json.loads(result_path.read_text())["manifest"]["epsilon"] == 1.0


def test_no_privacy_claimed_is_refused(digits):
    with pytest.raises(DpauditError, match="nothing to audit"):
        audit(Copier(), digits, math.inf)
