"""The generator framework: overrides, label allocation, checkpoints, registry, the CLI."""

import json
import typing
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
from click.testing import CliRunner

from dpaudit.cli import cli
from dpaudit.errors import DpauditError
from dpaudit.generators import GENERATORS, Checkpointer, PrivacyReport, apply_overrides, get_generator
from dpaudit.generators.base import POSITIVE, Generator, Positive, balanced_labels, check_positive, proportional_labels
from dpaudit.images import ImageSet, load_images
from dpaudit.privacy import PrivacyBudget


@dataclass
class Options:
    steps: int = 10
    lr: float = 1e-3
    fast: bool = False
    scales: tuple[float, ...] = (1.0, 2.0)
    mode: Literal["a", "b"] = "a"
    label: str = "x"


def test_overrides_are_parsed_to_the_declared_types():
    got = apply_overrides(Options(), ["steps=3", "lr=2e-2", "fast=yes", "scales=4, 8,16", "mode=b", "label=hello=1"])
    assert got == Options(3, 0.02, True, (4.0, 8.0, 16.0), "b", "hello=1")
    assert apply_overrides(Options(), {"steps": "7"}).steps == 7
    assert Options().steps == 10  # the default is untouched


@pytest.mark.parametrize(
    "item, message",
    [
        ("stepz=3", "valid keys are steps, lr, fast, scales, mode, label"),
        ("steps=3.5", "expected int"),
        ("fast=maybe", "expected true or false"),
        ("mode=c", "expected one of a, b"),
        ("steps", "expected key=value"),
    ],
)
def test_bad_overrides_raise_a_user_error(item, message):
    with pytest.raises(DpauditError, match=message):
        apply_overrides(Options(), [item])


def test_balanced_and_proportional_labels_follow_the_largest_remainder_rule():
    assert balanced_labels(13, 4).bincount().tolist() == [4, 3, 3, 3]
    # quotas 10 * (0.15, 0.25, 0.6) = 1.5, 2.5, 6: one extra goes to the first largest remainder
    counts = proportional_labels(10, torch.tensor([15.0, 25.0, 60.0])).bincount(minlength=3)
    assert counts.tolist() == [2, 2, 6]
    # noisy counts can be negative: a class with a clamped-to-zero weight gets nothing
    assert proportional_labels(5, torch.tensor([-3.0, 1.0])).tolist() == [1, 1, 1, 1, 1]
    labels = proportional_labels(1000, torch.rand(7, generator=torch.Generator().manual_seed(0)))
    assert len(labels) == 1000 and labels.tolist() == sorted(labels.tolist())


def test_checkpointer_round_trip_and_refuses_another_run(tmp_path):
    ck = Checkpointer(tmp_path / "ck", every_steps=2)
    ck.bind({"run": 1})
    assert ck.load() is None
    assert not ck.due(1) and ck.due(2)
    ck.save({"step": 2, "w": torch.arange(3.0), "rng": torch.Generator().manual_seed(1).get_state()})
    again = Checkpointer(tmp_path / "ck")
    again.bind({"run": 1})
    state = again.load()
    assert state["step"] == 2 and torch.equal(state["w"], torch.arange(3.0))
    other = Checkpointer(tmp_path / "ck")
    other.bind({"run": 2})
    with pytest.raises(DpauditError, match="belongs to another run"):
        other.load()
    again.clear()
    assert not (tmp_path / "ck").exists()


def test_disabled_checkpointer_never_saves():
    ck = Checkpointer(None, every_steps=1)
    ck.bind({})
    assert not ck.due(1) and ck.load() is None
    ck.save({"a": 1})
    ck.clear()


class Mean(Generator):
    """A toy generator: the class means of the members, no noise, for the base class's logic."""

    name = "toy-mean"
    Config = Options

    def train(self, members, budget, seed):
        self.means = torch.stack([members.x[members.y == c].mean(0) for c in range(self.num_classes)])
        self.class_counts = torch.bincount(members.y, minlength=self.num_classes).float()
        return PrivacyReport(budget.epsilon, budget.delta, "rdp", [(1.0, 0.5, 7)], "toy", "add-remove")

    def generate(self, labels, seed):
        return self.means[labels]

    def released_state(self):
        return {"means": self.means}

    def load_released_state(self, state):
        self.means = state["means"]


def test_base_fit_sample_and_report(digits):
    gen = Mean()
    with pytest.raises(DpauditError, match="fit the generator"):
        gen.sample(3)
    with pytest.raises(DpauditError, match="labelled"):
        gen.fit(ImageSet(digits.members.x), PrivacyBudget(1.0, 1e-5))
    gen.fit(digits.members, PrivacyBudget(1.0, 1e-5), seed=0)
    out = gen.sample(20)
    assert out.y.bincount().tolist() == [2] * 10 and out.shape == digits.members.shape
    proportional = gen.sample(1077, "proportional")
    assert proportional.y.bincount().tolist() == digits.members.y.bincount().tolist()
    with pytest.raises(DpauditError, match="class labels in 0..9"):
        gen.sample(2, torch.tensor([0, 10]))
    report = gen.privacy_report()
    assert (report["sigma"], report["sample_rate"], report["steps"]) == (1.0, 0.5, 7)
    assert report["epsilon"] == 1.0 and report["wall_time_s"] >= 0


def test_registry_names_and_unknown_generator():
    assert {"dp-merf", "pearl"} <= set(GENERATORS)
    assert get_generator("pearl").name == "pearl"
    with pytest.raises(DpauditError, match="available: .*dp-merf"):
        get_generator("nope")


TINY = ["--set", "features=200", "--set", "steps=4", "--set", "batch_size=40", "--set", "width=8"]


def test_generate_command_writes_images_and_manifest(tmp_path):
    out = tmp_path / "syn"
    res = CliRunner().invoke(
        cli, ["generate", "dp-merf", "--dataset", "digits", "--epsilon", "1", "--num", "30", "--out", str(out), *TINY]
    )
    assert res.exit_code == 0, res.output
    images = load_images(out)
    assert len(images) == 30 and images.y.bincount().tolist() == [3] * 10
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"] == "dp-merf" and manifest["split_id"].startswith("digits:s0:")
    assert manifest["epsilon"] == manifest["details"]["epsilon"] <= 1.0
    assert manifest["details"]["config"]["steps"] == 4
    assert not (out / ".checkpoint").exists()
    again = CliRunner().invoke(
        cli, ["generate", "dp-merf", "--dataset", "digits", "--epsilon", "1", "--num", "30", "--out", str(out), *TINY]
    )
    assert again.exit_code == 2 and "not empty" in again.output


def test_generate_without_seed_draws_a_secret_one(tmp_path):
    runs = []
    for name in ("a", "b"):
        argv = ["generate", "dp-merf", "--dataset", "digits", "--epsilon", "1", "--num", "20", "--out", str(tmp_path / name)]
        assert CliRunner().invoke(cli, argv + TINY).exit_code == 0
        manifest = json.loads((tmp_path / name / "manifest.json").read_text())
        assert manifest["seed"] is None
        runs.append(load_images(tmp_path / name))
        assert not (tmp_path / name / ".checkpoint").exists()
    assert not torch.equal(runs[0].x, runs[1].x)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "stepz=1"], "valid keys are"),
        (["--epsilon", "0"], "epsilon must be positive"),
        (["--members", "."], "exactly one of --dataset"),
    ],
)
def test_generate_command_user_errors(tmp_path, args, message):
    base = {"--epsilon": "1"}
    argv = ["generate", "dp-merf", "--dataset", "digits", "--num", "5", "--out", str(tmp_path / "o")]
    if "--epsilon" not in args:
        argv += ["--epsilon", base["--epsilon"]]
    res = CliRunner().invoke(cli, argv + args)
    assert res.exit_code == 2 and message in res.output


@dataclass
class Declared:
    lr: Positive[float] = 1e-3
    steps: Positive[int] = 3
    weight: float = 0.0  # may be zero or negative: not declared positive


def test_fields_declared_positive_are_checked_by_name_and_overrides_still_parse():
    check_positive(Declared())
    check_positive(Declared(weight=-1.0))
    for bad in (Declared(lr=0.0), Declared(steps=-2), Declared(lr=float("nan"))):
        with pytest.raises(DpauditError, match=r"--set (lr|steps): must be positive"):
            check_positive(bad)
    assert apply_overrides(Declared(), ["lr=0.5", "steps=7"]) == Declared(0.5, 7)
    for cls in GENERATORS.values():  # every generator declares some, and its defaults pass
        hints = typing.get_type_hints(cls.Config, include_extras=True).values()
        assert any(POSITIVE in getattr(hint, "__metadata__", ()) for hint in hints), cls.name
        check_positive(cls.Config())
