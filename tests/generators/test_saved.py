"""A fitted generator saved and loaded back (dpaudit/generators/saved.py): what the file holds
and leaves out, the files it refuses, and `dpaudit generate --save-generator` then `dpaudit
sample`. That every generator samples the same after loading is in the contract suite."""

import json
import math
import pickle

import pytest
import torch
from click.testing import CliRunner

from dpaudit.cli import cli
from dpaudit.errors import DpauditError
from dpaudit.generators import DPMERF, TrainingRun, load_generator, save_generator
from dpaudit.generators.saved import FORMAT
from dpaudit.images import load_images
from dpaudit.manifest import read_manifest
from dpaudit.privacy import PrivacyBudget


@pytest.fixture(scope="module")
def fitted(digits):
    return DPMERF.from_options(DPMERF.test_overrides).fit(digits.members, PrivacyBudget(2.0, 1e-5), seed=123)


def run_of(digits, epsilon=2.0, seed=123):
    return TrainingRun(PrivacyBudget(epsilon, 1e-5), "digits", "digits:s0", digits.members.fingerprint(), seed)


def saved_payload(fitted, digits, tmp_path):
    path = save_generator(fitted, run_of(digits), tmp_path / "gen.pt")
    return path, torch.load(path, weights_only=True)


def test_the_file_holds_no_member_image_and_not_the_seed_of_a_private_run(fitted, digits, tmp_path):
    _, payload = saved_payload(fitted, digits, tmp_path)
    assert payload["format"] == FORMAT and json.loads(payload["run"])["seed"] is None
    assert set(payload["state"]) == {"model"}  # the decoder alone: no release sums, no frequencies
    tensors = [t for t in payload["state"]["model"].values()]
    assert sum(t.numel() for t in tensors) < len(digits.members) * 64  # far smaller than the members


def test_a_non_private_run_keeps_its_seed(digits, tmp_path):
    generator = DPMERF.from_options(DPMERF.test_overrides).fit(digits.members, PrivacyBudget(math.inf, 1e-5), seed=9)
    _, run = load_generator(save_generator(generator, run_of(digits, math.inf, 9), tmp_path / "gen.pt"))
    assert run.seed == 9 and run.public_seed == 9 and not run.budget.is_private


def test_an_unfitted_generator_is_not_saved(digits, tmp_path):
    with pytest.raises(DpauditError, match="fit the generator"):
        save_generator(DPMERF(), run_of(digits), tmp_path / "gen.pt")
    assert not any(tmp_path.iterdir())


class Payload:
    """Unpickling this runs code: torch.load(weights_only=True) must refuse it before."""

    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('ran')",))


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "x": Payload()}, path)
    with pytest.raises(DpauditError, match="evil.pt: not a saved dpaudit generator"):
        load_generator(path)
    assert not (tmp_path / "PWNED").exists()
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(DpauditError, match="evil.pt: not a saved dpaudit generator"):
        load_generator(path)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("damage", ["bytes", "truncated", "format", "generator", "config-key", "config-type",
                                    "width", "history", "budget"])
def test_damaged_or_foreign_files_are_one_sentence_errors_naming_the_file(fitted, digits, tmp_path, damage):
    path, payload = saved_payload(fitted, digits, tmp_path)
    config, run = json.loads(payload["config"]), json.loads(payload["run"])
    if damage == "bytes":
        path.write_bytes(b"not a torch file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:300])
    else:
        if damage == "format":
            payload["format"] = "something/2"
        elif damage == "generator":
            payload["generator"] = "no-such-method"
        elif damage == "config-key":
            config["surprise"] = 1
        elif damage == "config-type":
            config["steps"] = "many"
        elif damage == "width":  # the saved networks no longer fit the hyper-parameters
            config["width"] = config["width"] * 2
        elif damage == "history":
            payload["report"] = payload["report"].replace('"history": [[', '"history": [["x", ')
        elif damage == "budget":
            run["budget"] = [-1, 1e-5]
        payload["config"], payload["run"] = json.dumps(config), json.dumps(run)
        torch.save(payload, path)
    with pytest.raises(DpauditError) as error:
        load_generator(path)
    message = str(error.value)
    assert message.startswith(str(path)) and message.count("\n") == 0


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DpauditError, match="nothing.pt: no such file"):
        load_generator(tmp_path / "nothing.pt")


def test_generate_saves_and_sample_writes_new_images_with_the_runs_manifest(tmp_path):
    runner = CliRunner()
    saved = tmp_path / "gen.pt"
    common = ["--dataset", "digits", "--epsilon", "2", "--num", "20", "--format", "npz", "--save-generator", str(saved)]
    for key, value in DPMERF.test_overrides.items():
        common += ["--set", f"{key}={value}"]
    first = runner.invoke(cli, ["generate", "dp-merf", "--out", str(tmp_path / "a"), *common])
    assert first.exit_code == 0, first.output
    trained = read_manifest(tmp_path / "a")

    again = runner.invoke(cli, ["generate", "dp-merf", "--out", str(tmp_path / "b"), *common])
    assert again.exit_code == 2 and "already exists" in again.output  # refused before training
    assert not (tmp_path / "b").exists()

    for out in ("c", "d"):
        result = runner.invoke(cli, ["sample", str(saved), "--num", "30", "--out", str(tmp_path / out), "--seed", "4",
                                     "--format", "npz", "--labels", "proportional"])
        assert result.exit_code == 0, result.output
    c, d = load_images(tmp_path / "c"), load_images(tmp_path / "d")
    assert len(c) == 30 and torch.equal(c.x, d.x)
    manifest = read_manifest(tmp_path / "c")
    assert manifest.epsilon == trained.epsilon and manifest.delta == trained.delta and manifest.seed is None
    assert (manifest.dataset, manifest.split_id) == (trained.dataset, trained.split_id)
    assert manifest.details["members_fingerprint"] == trained.details["members_fingerprint"]
    assert manifest.details["history"] == trained.details["history"] and manifest.details["sampling_seed"] == 4
    assert manifest.details["labels"] == "proportional"


def test_sample_refuses_a_file_that_is_not_a_saved_generator(tmp_path):
    bad = tmp_path / "gen.pt"
    bad.write_text("hello")
    result = CliRunner().invoke(cli, ["sample", str(bad), "--num", "5", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "gen.pt: not a saved dpaudit generator" in result.output
    assert not (tmp_path / "out").exists()
