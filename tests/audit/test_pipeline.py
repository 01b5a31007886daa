"""evaluate() and `dpaudit evaluate`: validation before work, checks wired, JSON result."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dpaudit import approximate_search, faiss_engine, neighbors, pixels
from dpaudit.audit import pipeline
from dpaudit.audit.pipeline import CHECKS, evaluate, validate
from dpaudit.audit.profiles import QUICK
from dpaudit.audit.result import load_result
from dpaudit.cli import cli
from dpaudit.errors import DpauditError
from dpaudit.datasets import reference_from_folders
from dpaudit.images import ImageSet, load_images, save_images, to_uint8
from dpaudit.manifest import Manifest
from dpaudit.pixels import Pixels

FAST = ["fidelity", "similarity"]


def _copy_of_members(digits, n=300):
    return digits.members.subset(range(n), "copies")


def test_validate_refuses_mismatched_shapes(digits):
    wrong = ImageSet(torch.zeros(4, 1, 9, 9), torch.zeros(4, dtype=torch.long), 10, "w", "wrong.npz")
    with pytest.raises(DpauditError, match=r"wrong.npz: synthetic images are 9x9 .* real images are 8x8"):
        validate(wrong, digits, FAST)


def test_validate_refuses_unknown_checks_and_labels(digits):
    with pytest.raises(DpauditError, match="unknown check 'bogus'"):
        validate(_copy_of_members(digits), digits, ["bogus"])
    labels = torch.full((4,), 12, dtype=torch.long)
    with pytest.raises(DpauditError, match="label 12 is outside"):
        validate(ImageSet(torch.zeros(4, 1, 8, 8), labels, 13, "l", "labels.npz"), digits, FAST)
    with pytest.raises(DpauditError, match=r"labels.npz: label -1 is outside the reference's classes 0..9"):
        validate(ImageSet(torch.zeros(4, 1, 8, 8), torch.tensor([0, -1, 2, 3]), 10, "l", "labels.npz"), digits, FAST)


def test_every_check_is_registered():
    assert set(CHECKS) == {
        "fidelity", "utility", "similarity", "membership", "privacy_claim", "gradient_matching", "gan_attack",
        "memorization"
    }


def test_evaluate_copies_are_flagged_and_json_round_trips(digits, tmp_path):
    manifest = Manifest.new("copier", epsilon=1.0, delta=1e-5, dataset="digits", split_id="digits:s9:m1:h1:x", seed=0)
    result = evaluate(_copy_of_members(digits), digits, checks=FAST, manifest=manifest, progress=False)
    assert result.get("similarity.near_copy_share") == pytest.approx(1.0)
    assert result.feature_extractor["name"]
    assert any("digits:s9:m1:h1:x" in w for w in result.warnings)
    back = load_result(result.save(tmp_path / "result.json"))
    assert back.to_dict() == result.to_dict()


def test_evaluate_is_repeatable_for_a_seed(digits):
    a = evaluate(digits.test, digits, checks=FAST, seed=3, progress=False).to_dict()
    b = evaluate(digits.test, digits, checks=FAST, seed=3, progress=False).to_dict()
    for doc in (a, b):
        doc.pop("created")
        for check in doc["checks"].values():
            check.pop("seconds")
    assert a == b


def test_unlabelled_synthetic_skips_label_checks_with_a_warning(digits):
    unlabelled = ImageSet(digits.test.x.clone(), None, None, "u", "u")
    result = evaluate(unlabelled, digits, checks=["similarity", "utility"], progress=False)
    assert list(result.checks) == ["similarity"]
    assert any("no labels" in w and "utility" in w for w in result.warnings)


def test_cli_evaluate_writes_result(tmp_path, digits):
    save_images(_copy_of_members(digits), tmp_path / "synthetic")
    Manifest.new("copier", dataset="digits", split_id=digits.split_id).write(tmp_path / "synthetic")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli,
        ["evaluate", "--synthetic", str(tmp_path / "synthetic"), "--dataset", "digits",
         "--checks", "similarity", "--out", str(out), "--no-report"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "result.json").read_text())
    assert data["reference"]["split_id"] == digits.split_id
    assert data["manifest"]["generator"] == "copier"
    assert data["checks"]["similarity"]["metrics"]["near_copy_share"]["value"] == pytest.approx(1.0)
    # the scorecard ends the output: copies leak, and the checks that did not run are said
    answers = [line[:30].split(None, 3)[3].strip() for line in result.output.splitlines() if line.startswith(("Is it", "Does it"))]
    assert answers == ["NOT MEASURED", "NOT MEASURED", "YES"]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--dataset", "digits", "--members", "."], "either --dataset or --members"),
        ([], "give --dataset NAME, or all three"),
        (["--dataset", "digits", "--checks", "similarity,nope"], "unknown check 'nope'"),
    ],
)
def test_cli_evaluate_usage_errors(tmp_path, digits, extra, match):
    save_images(_copy_of_members(digits, 20), tmp_path / "s")
    result = CliRunner().invoke(cli, ["evaluate", "--synthetic", str(tmp_path / "s"), *extra, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and match in result.output and "Traceback" not in result.output


def test_cli_evaluate_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["evaluate", "--synthetic", str(tmp_path / "empty"), "--dataset", "digits"])
    assert result.exit_code == 2 and "holds no PNG or JPEG" in result.output


def test_extractor_is_loaded_only_when_a_check_needs_features(digits, monkeypatch):
    calls = []
    real = pipeline.load_extractor
    monkeypatch.setattr(pipeline, "load_extractor", lambda *a: calls.append(a) or real(*a))
    result = evaluate(digits.test, digits, checks=["similarity"], progress=False)
    assert calls == [] and result.feature_extractor["name"] is None
    result = evaluate(digits.test, digits, checks=["fidelity"], progress=False)
    assert len(calls) == 1 and result.feature_extractor["name"] == "lenet-digits"


def test_a_second_audit_against_the_same_reference_extracts_only_the_synthetic_features(digits, monkeypatch, tmp_path):
    from dpaudit.audit.features import FeatureExtractor

    monkeypatch.setenv("DPAUDIT_CACHE", str(tmp_path))
    extracted = []
    original = FeatureExtractor.__call__

    def counting(self, images):
        extracted.append(len(images))
        return original(self, images)

    monkeypatch.setattr(FeatureExtractor, "__call__", counting)
    checks = ["fidelity", "membership"]
    first = evaluate(digits.test, digits, checks=checks, progress=False)
    n_first = sum(extracted)
    extracted.clear()
    other = digits.holdout.subset(range(300), "other")
    second = evaluate(other, digits, checks=checks, progress=False)
    # the members', holdout's and targets' features come from the on-disk cache: only the new set is extracted
    assert extracted == [300] and n_first > 1000
    again = evaluate(digits.test, digits, checks=checks, progress=False)
    assert again.get("fidelity.fid") == first.get("fidelity.fid") and again.get("membership.auc") == first.get("membership.auc")
    assert second.get("fidelity.fid") != first.get("fidelity.fid")


def test_every_search_of_a_default_audit_is_exact(digits):
    result = evaluate(_copy_of_members(digits), digits, checks=["similarity"], progress=False)
    assert result.nearest_neighbors == {"index": "auto", "approximate": []}


@pytest.mark.skipif(faiss_engine.load() is None, reason="faiss-cpu not installed (the `peers` extra)")
def test_cli_evaluate_with_an_approximate_index_records_its_recall(tmp_path, digits):
    save_images(_copy_of_members(digits), tmp_path / "synthetic")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["evaluate", "--synthetic", str(tmp_path / "synthetic"), "--dataset", "digits",
              "--checks", "similarity", "--nn-index", "ivf", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    loaded = load_result(out / "result.json")
    assert loaded.nearest_neighbors["index"] == "ivf"
    searches = loaded.nearest_neighbors["approximate"]
    assert searches and {s["check"] for s in searches} == {"similarity"} and {s["index"] for s in searches} == {"ivf"}
    assert min(s["recall"] for s in searches) >= 0.99 and not any("approximate" in w for w in loaded.warnings)
    assert loaded.checks["similarity"].metrics["near_copy_share"].value == pytest.approx(1.0)
    html = (out / "report.html").read_text()
    assert "Nearest-neighbour search" in html and f"{len(searches)} searches took candidates from an approximate index" in html


@pytest.mark.skipif(faiss_engine.load() is None, reason="faiss-cpu not installed (the `peers` extra)")
def test_a_recall_below_the_target_is_a_warning(digits, monkeypatch):
    monkeypatch.setattr(approximate_search, "RECALL_TARGET", 1.01)
    monkeypatch.setattr(approximate_search, "HNSW_MAX_EF", 64)
    result = evaluate(_copy_of_members(digits), digits, checks=["similarity"], nn_index="hnsw", progress=False)
    warned = [w for w in result.warnings if "approximate HNSW index" in w]
    assert len(warned) == len(result.nearest_neighbors["approximate"]) > 0
    assert "similarity check" in warned[0] and "--nn-index exact" in warned[0]


def _write_reference(digits, folder, save) -> dict:
    """The digits reference (and its test images as the synthetic set) as 8-bit .npz files written by `save`."""
    folder.mkdir()
    paths = {}
    for role, images in (("members", digits.members), ("holdout", digits.holdout), ("test", digits.test),
                         ("synthetic", digits.test)):
        paths[role] = folder / f"{role}.npz"
        save(paths[role], x=to_uint8(images.x).permute(0, 2, 3, 1).numpy(), y=images.y.numpy())
    return paths


def test_an_audit_streams_a_memory_mapped_reference_and_gives_the_numbers_of_one_in_memory(digits, tmp_path,
                                                                                           monkeypatch):
    profile = dataclasses.replace(
        QUICK, classifiers=dataclasses.replace(QUICK.classifiers, epochs=1, min_steps=60, precision="float32"))
    checks = ["fidelity", "utility", "similarity", "membership"]
    results = {}
    for save in (np.savez_compressed, np.savez):  # read into memory, then memory-mapped
        paths = _write_reference(digits, tmp_path / save.__name__, save)
        reference = reference_from_folders(paths["members"], paths["holdout"], paths["test"])
        synthetic = load_images(paths["synthetic"])
        mapped = save is np.savez
        assert all(s.pixels.memory_mapped == mapped for s in (reference.members, reference.holdout, synthetic))
        converted = []  # every whole set converted to float32 (Pixels.float)
        if mapped:  # every pixel search streams, 100 images a block
            monkeypatch.setattr(neighbors, "STREAM_ABOVE_BYTES", 0)
            monkeypatch.setattr(pixels, "BLOCK_VALUES", 100 * 64)
            whole = Pixels.float
            monkeypatch.setattr(Pixels, "float", lambda self: converted.append(self.data) or whole(self))
        result = evaluate(synthetic, reference, checks=checks, profile=profile, progress=False)
        results[save.__name__] = {(check, name): m.value for check, c in result.checks.items()
                                  for name, m in c.metrics.items()}
        # the members, the holdout and the synthetic set are read block by block, never whole
        assert not any(data is s.pixels.data for data in converted
                       for s in (reference.members, reference.holdout, synthetic))
    assert results["savez"] == pytest.approx(results["savez_compressed"], rel=1e-6, abs=1e-9, nan_ok=True)
    assert len(results["savez"]) > 20
