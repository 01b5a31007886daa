"""The contract every reference generator keeps: one suite over `GENERATORS`, each generator
run with its own `test_overrides` on the digits members. Registration, accounting within the
budget (equal to opacus' accountant called directly on the reported history), resumption
after an interruption, and the shape of the samples. What is particular to one method is
tested in that method's own file."""

import dataclasses
import inspect

import pytest
import torch

import dpaudit.generators
from dpaudit.generators import (GENERATORS, Checkpointer, Generator, TrainingRun, apply_overrides, get_generator,
                                load_generator, save_generator)
from dpaudit.privacy import PrivacyBudget
from dpaudit.audit.privacy_claim import reaccount_declared
from tests.colour_reference import SHAPE, colour_images
from tests.generators.opacus_reference import opacus_epsilon

REFERENCE_GENERATORS = {"dp-merf", "pearl", "dpsgd-gan", "latent-diffusion", "bn-matching", "lipschitz-vae"}
DELTA = 1e-5
# Every generator calibrates its noise to the budget (to 0.5%); its tests hold it to 1%.
CALIBRATION_TOLERANCE = 0.01


class CountingCheckpointer(Checkpointer):
    """A checkpointer due after every step that counts its saves. `write=False` writes
    nothing: the run is then as if it had no checkpoints. `interrupt_after=k` raises
    KeyboardInterrupt right after the k-th save, as Ctrl-C during training would."""

    def __init__(self, folder, *, write=True, interrupt_after=None):
        super().__init__(folder, every_steps=1)
        self.write, self.interrupt_after, self.saves = write, interrupt_after, 0

    def save(self, state):
        if self.write:
            super().save(state)
        self.saves += 1
        if self.saves == self.interrupt_after:
            raise KeyboardInterrupt


def fit(cls, members, epsilon, checkpoint):
    return cls.from_options(cls.test_overrides, checkpoint=checkpoint).fit(members, PrivacyBudget(epsilon, DELTA), seed=0)


def without_wall_time(report: dict) -> dict:
    return {k: v for k, v in report.items() if k != "wall_time_s"}


@pytest.fixture(scope="module", params=sorted(GENERATORS))
def name(request):
    return request.param


@pytest.fixture(scope="module")
def cls(name):
    return get_generator(name)


@pytest.fixture(scope="module")
def runs(cls, digits, tmp_path_factory):
    """{epsilon: (generator, saves)}: uninterrupted runs at epsilon 10 and 1, seed 0, and the
    number of checkpoint saves each would make (counted, not written)."""
    out = {}
    for epsilon in (10.0, 1.0):
        checkpoint = CountingCheckpointer(tmp_path_factory.mktemp("unwritten"), write=False)
        out[epsilon] = (fit(cls, digits.members, epsilon, checkpoint), checkpoint.saves)
    return out


def test_the_registry_holds_every_exported_generator_under_its_cli_name():
    exported = [getattr(dpaudit.generators, attr) for attr in dpaudit.generators.__all__]
    classes = [c for c in exported if inspect.isclass(c) and issubclass(c, Generator) and not inspect.isabstract(c)]
    assert {c.name: c for c in classes} == GENERATORS and len(classes) == len(GENERATORS)
    assert REFERENCE_GENERATORS <= set(GENERATORS)


def test_registered_with_a_config_whose_defaults_build_and_valid_test_overrides(name, cls):
    assert cls.name == name and getattr(dpaudit.generators, cls.__name__) is cls
    assert dataclasses.is_dataclass(cls.Config)
    assert cls().config == cls.Config()
    assert all(isinstance(v, str) for v in cls.test_overrides.values())  # as `--set` takes them
    assert apply_overrides(cls.Config(), cls.test_overrides) != cls.Config()


@pytest.mark.parametrize("epsilon", [10.0, 1.0])
def test_reported_epsilon_meets_the_budget_and_is_opacus_on_the_reported_history(runs, epsilon):
    report = runs[epsilon][0].privacy_report()
    assert (1 - CALIBRATION_TOLERANCE) * epsilon <= report["epsilon"] <= epsilon
    assert report["delta"] == DELTA
    assert report["epsilon"] == pytest.approx(opacus_epsilon(report["history"], DELTA, report["accountant"]), rel=1e-12)


def test_an_interrupted_run_resumes_to_the_samples_and_accounting_of_an_uninterrupted_one(cls, runs, digits, tmp_path):
    """Interrupted right after its last save but one (at epsilon 1, whose calibration is
    quicker), a run resumes inside its last checkpointed stage with the earlier ones restored
    complete: latent-diffusion's diffusion stage after its autoencoder, bn-matching's classifier
    before the statistics release. dp-merf and pearl read the data once, before their first
    save: they checkpoint the decoder's training (post-processing), and their history is the
    one release however the run goes; for them this shows that the restored release and
    decoder continue exactly."""
    whole, saves = runs[1.0]
    assert saves >= 2, f"{cls.name}: test_overrides must leave at least two checkpoint saves"
    with pytest.raises(KeyboardInterrupt):
        fit(cls, digits.members, 1.0, CountingCheckpointer(tmp_path, interrupt_after=saves - 1))
    assert (tmp_path / Checkpointer.FILE).is_file()
    checkpoint = CountingCheckpointer(tmp_path)
    resumed = fit(cls, digits.members, 1.0, checkpoint)
    assert checkpoint.saves == 1  # it went on from the checkpoint, not from the start
    assert torch.equal(resumed.sample(30, seed=4).x, whole.sample(30, seed=4).x)
    assert without_wall_time(resumed.privacy_report()) == without_wall_time(whole.privacy_report())
    assert not (tmp_path / Checkpointer.FILE).exists()  # cleared once the run finished


def test_samples_are_images_of_the_members_shape_in_the_unit_range_with_balanced_labels(runs, digits):
    generator = runs[10.0][0]
    synthetic = generator.sample(30, seed=1)
    assert synthetic.x.shape == (30, *digits.members.shape) and synthetic.x.dtype == torch.float32
    assert bool(((synthetic.x >= 0) & (synthetic.x <= 1)).all())  # NaN fails too
    assert torch.bincount(synthetic.y, minlength=10).tolist() == [3] * 10 and synthetic.num_classes == 10
    assert torch.equal(generator.sample(30, seed=1).x, synthetic.x)


def test_saved_and_loaded_it_samples_and_reports_as_the_fitted_one(runs, digits, tmp_path):
    """`dpaudit generate --save-generator` then `dpaudit sample`: the loaded generator is built
    from the file alone (a fresh object, no training) and gives the same images for a seed, the
    same labels by the released counts, and the same privacy report."""
    generator = runs[10.0][0]
    run = TrainingRun(PrivacyBudget(10.0, DELTA), "digits", "digits:s0", digits.members.fingerprint(), seed=0)
    loaded, loaded_run = load_generator(save_generator(generator, run, tmp_path / "gen.pt"))
    assert loaded is not generator and type(loaded) is type(generator) and loaded.config == generator.config
    assert torch.equal(loaded.sample(30, seed=5).x, generator.sample(30, seed=5).x)
    if generator.class_counts is not None:
        assert torch.equal(loaded.sample(30, "proportional", seed=5).y, generator.sample(30, "proportional", seed=5).y)
    assert loaded.privacy_report() == generator.privacy_report()
    assert loaded_run == dataclasses.replace(run, seed=None)  # a private run's seed is never saved


@pytest.mark.parametrize("epsilon", [10.0, 1.0])
def test_the_declared_history_supports_the_claim_by_an_independent_accountant(runs, epsilon):
    """What `evaluate`'s privacy_claim check does with the manifest: dp-accounting (PLD, RDP) on
    the declared history and adjacency gives at most the claimed epsilon."""
    pytest.importorskip("dp_accounting")
    report = runs[epsilon][0].privacy_report()
    reaccounted = reaccount_declared(report, report["epsilon"], DELTA)
    assert reaccounted["supports_claim"], reaccounted
    if report["accountant"] == "rdp" and "rdp" in reaccounted:  # the same analysis in another implementation
        assert reaccounted["rdp"] == pytest.approx(report["epsilon"], rel=0.05)


def test_trains_on_colour_images_and_samples_their_shape(cls):
    """The RGB path (3 x 32 x 32, tests/colour_reference.py): every generator's networks take
    three channels, and the samples come out in the members' shape within the budget."""
    members = colour_images(200, 0, "colour-members")
    generator = cls.from_options(cls.test_overrides).fit(members, PrivacyBudget(10.0, DELTA), seed=0)
    synthetic = generator.sample(20, seed=1)
    assert synthetic.x.shape == (20, *SHAPE) and bool(((synthetic.x >= 0) & (synthetic.x <= 1)).all())
    assert generator.privacy_report()["epsilon"] <= 10.0 * (1 + CALIBRATION_TOLERANCE)
