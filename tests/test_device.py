"""`--device`: the models of an audit, of a generator's training and of a training audit run
where it says, and compute there what they compute on the CPU.

On the CPU the accelerator is emulated (tests/emulated_device.py: the `meta` device holding CPU
data, checked as a GPU checks its tensors), so these run everywhere; the tests marked `gpu`
run the same commands on a real CUDA device and are skipped without one."""

import dataclasses

import pytest
import torch
from click.testing import CliRunner

from dpaudit.audit import classifiers
from dpaudit.attacks.downstream import LiraConfig
from dpaudit.audit.pipeline import evaluate
from dpaudit.audit.profiles import QUICK
from dpaudit.audit.trainers import GeneratorTrainer
from dpaudit.audit.training_audit import TrainingAuditConfig, audit_training
from dpaudit.cli import cli
from dpaudit.generators import GENERATORS, get_generator
from dpaudit.images import save_images
from dpaudit.nets import resolve_device
from dpaudit.privacy import PrivacyBudget
from tests.emulated_device import Emulation, Recording

# What runs on the CPU by design, whatever --device says: the statistics on features and the
# pixel comparisons (float64, closed forms: dpaudit/audit/fidelity.py, transforms.py,
# image_similarity.py, composites.py), scoring a reconstruction against its original, and the
# shape probe a network makes in its constructor before it is moved.
CPU_BY_DESIGN = (
    "audit/fidelity.py:", "transforms.py:", "image_similarity.py:", "composites.py:",
    "attacks/gradient_matching.py:match_order", "attacks/memorization.py:pearson",
)

# The quick profile with small budgets (LiRA's shadow models on, so that they run too).
SMALL_BUDGETS = dataclasses.replace(
    QUICK,
    classifiers=dataclasses.replace(QUICK.classifiers, epochs=1, min_steps=60, precision="float32"),
    membership=dataclasses.replace(QUICK.membership, attacks={
        **QUICK.membership.attacks, "downstream_lira": LiraConfig(shadows=2, train_size=200, epochs=1)}),
    gradient_matching=dataclasses.replace(QUICK.gradient_matching, iterations=20, batches=2),
    gan_attack=dataclasses.replace(QUICK.gan_attack, steps=20),
    memorization=dataclasses.replace(QUICK.memorization, epochs=1, n_secrets=4),
)

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def off_device(fallbacks: list[str]) -> list[str]:
    """The places that ran heavy work on the CPU that should have run on the device."""
    return sorted({f for f in fallbacks if not f.startswith(CPU_BY_DESIGN) and ":__init__" not in f})


def check_metric_values(check) -> dict:
    return {name: metric.value for name, metric in check.metrics.items()}


def metric_values(result) -> dict:
    return {(name, metric): v for name, check in result.checks.items() for metric, v in check_metric_values(check).items()}


@pytest.fixture(scope="module")
def synthetic(digits):
    return digits.test


def test_every_model_of_an_audit_follows_the_device_and_computes_the_same(digits, synthetic, monkeypatch):
    # The TRTR ceiling trained here on both (the package ships one for the CPU, trained elsewhere),
    # and in float32 on both: `auto` precision is bfloat16 on a CPU with native bf16 only.
    monkeypatch.setattr(classifiers, "load_entry", lambda path: None)
    profile = SMALL_BUDGETS
    on_cpu = evaluate(synthetic, digits, profile=profile, device="cpu", progress=False)
    with Emulation() as emulation:
        on_device = evaluate(synthetic, digits, profile=profile, device="meta", progress=False)
    assert off_device(emulation.fallbacks) == []
    assert metric_values(on_device) == pytest.approx(metric_values(on_cpu), rel=1e-5, abs=1e-6, nan_ok=True)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_every_generator_trains_and_samples_on_the_device_as_on_the_cpu(digits, name):
    cls, budget = get_generator(name), PrivacyBudget(1.0, 1e-5)
    on_cpu = cls.from_options(cls.test_overrides, device="cpu").fit(digits.members, budget, seed=0)
    with Emulation() as emulation:
        on_device = cls.from_options(cls.test_overrides, device="meta").fit(digits.members, budget, seed=0)
        samples = on_device.sample(50, seed=1)
    assert off_device(emulation.fallbacks) == []
    assert type(samples.x) is torch.Tensor and samples.x.device.type == "cpu"  # released on the CPU
    assert on_device.privacy_report()["epsilon"] == on_cpu.privacy_report()["epsilon"]
    torch.testing.assert_close(samples.x, on_cpu.sample(50, seed=1).x, rtol=1e-4, atol=1e-5)


def test_a_training_audit_trains_its_runs_on_the_device(digits):
    config = TrainingAuditConfig(canaries=40, members=60, samples=400, features=False)
    overrides = tuple(f"{k}={v}" for k, v in get_generator("dp-merf").test_overrides.items())

    def audited(device):
        result = audit_training(GeneratorTrainer("dp-merf", overrides, device), digits, PrivacyBudget(1.0, 1e-5),
                                config=config, seed=0, progress=False)
        return next(iter(result.checks.values()))

    on_cpu = audited("cpu")
    with Emulation() as emulation:
        on_device = audited("meta")
    assert off_device(emulation.fallbacks) == []
    assert on_device.details["verdict"] == on_cpu.details["verdict"]
    assert check_metric_values(on_device) == pytest.approx(check_metric_values(on_cpu), rel=1e-5, abs=1e-6)


def test_the_emulation_catches_a_tensor_left_on_the_cpu():
    model = torch.nn.Linear(4, 2)
    with Emulation(), pytest.raises(RuntimeError, match="same device"):
        model.to("meta")(torch.zeros(3, 4))


def test_the_emulation_records_a_model_left_on_the_cpu():
    with Emulation() as emulation:
        torch.nn.Linear(4, 2)(torch.zeros(3, 4))
    assert emulation.fallbacks == ["outside dpaudit"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_device_is_a_one_sentence_error(tmp_path, digits):
    with pytest.raises(Exception, match="no CUDA device"):
        resolve_device("cuda")
    save_images(digits.test.subset(range(20)), tmp_path / "synthetic")
    run = CliRunner().invoke(cli, ["evaluate", "--synthetic", str(tmp_path / "synthetic"), "--dataset", "digits",
                                   "--device", "cuda", "--out", str(tmp_path / "out")])
    assert run.exit_code == 2 and "no CUDA device" in run.output
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ on a real GPU


@needs_gpu
def test_gpu_audit_runs_its_models_on_the_gpu_from_pinned_memory(digits, synthetic):
    with Recording() as recording:
        result = evaluate(synthetic, digits, profile=SMALL_BUDGETS, device="cuda", progress=False)
    assert off_device(recording.fallbacks) == []
    assert recording.pinned > 0
    on_cpu = evaluate(synthetic, digits, profile=SMALL_BUDGETS, device="cpu", progress=False)
    # Other kernels, other rounding: the same audit to the precision the checks report.
    assert result.get("similarity.near_copy_share") == on_cpu.get("similarity.near_copy_share")
    assert result.get("utility.tstr_accuracy") == pytest.approx(on_cpu.get("utility.tstr_accuracy"), abs=0.05)


@needs_gpu
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_gpu_every_generator_trains_and_samples_on_the_gpu(digits, name):
    cls, budget = get_generator(name), PrivacyBudget(1.0, 1e-5)
    with Recording() as recording:
        generator = cls.from_options(cls.test_overrides, device="cuda").fit(digits.members, budget, seed=0)
        samples = generator.sample(50, seed=1)
    assert off_device(recording.fallbacks) == []
    assert samples.x.device.type == "cpu" and samples.x.shape == (50, *digits.members.shape)
    on_cpu = cls.from_options(cls.test_overrides, device="cpu").fit(digits.members, budget, seed=0)
    assert generator.privacy_report()["epsilon"] == on_cpu.privacy_report()["epsilon"]


@needs_gpu
def test_gpu_cli_generate_and_training_audit(tmp_path):
    runner = CliRunner()
    overrides = [a for k, v in get_generator("dp-merf").test_overrides.items() for a in ("--set", f"{k}={v}")]
    run = runner.invoke(cli, ["generate", "dp-merf", "--dataset", "digits", "--epsilon", "1", "-n", "100",
                              "--device", "cuda", "--out", str(tmp_path / "gen"), *overrides])
    assert run.exit_code == 0, run.output
    run = runner.invoke(cli, ["audit-training", "--generator", "dp-merf", *overrides, "--dataset", "digits",
                              "--epsilon", "1", "--canaries", "40", "--train-members", "60", "--samples", "400",
                              "--device", "cuda", "--seed", "0", "--out", str(tmp_path / "audit"), "--no-report"])
    assert run.exit_code == 0, run.output
    assert (tmp_path / "audit" / "result.json").exists()

