"""result.json read back: every field's type checked (one sentence naming the file and the field),
size and nesting capped before parsing, unknown fields ignored, old results still read, and
`save` atomic."""

import copy
import errno
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from dpaudit.audit.result import MAX_RESULT_BYTES, AuditResult, load_result
from dpaudit.schema import MAX_DEPTH
from dpaudit.cli import cli
from dpaudit.errors import DpauditError
from tests.reports.fakes import fake_result

BASE = fake_result().to_dict()
DELETE = object()


def mutated(path: str, value) -> dict:
    """BASE with the field at the dotted `path` set to `value` (or deleted: DELETE)."""
    doc = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return doc


def refusal(tmp_path, doc=None, *, text: str | None = None) -> tuple[str, str]:
    """Write `doc` (or `text`) as result.json, load it: the error's message and the file's name."""
    path = tmp_path / "result.json"
    path.write_text(json.dumps(doc) if text is None else text)
    with pytest.raises(DpauditError) as info:
        load_result(path)
    return str(info.value), str(path)


M = "checks.membership.metrics.auc"
F = "checks.fidelity"
BAD_FIELDS = [
    # the top-level fields of AuditResult
    ("checks", [], "checks must be an object, got a list of 0."),
    ("synthetic", "synthetic", "synthetic must be an object, got the string 'synthetic'."),
    ("synthetic", [1], "synthetic must be an object, got a list of 1."),
    ("manifest", "none", "manifest must be an object or null, got the string 'none'."),
    ("manifest", [], "manifest must be an object or null, got a list of 0."),
    ("reference", None, "reference must be an object, got null."),
    ("feature_extractor", ["lenet"], "feature_extractor must be an object, got a list of 1."),
    ("seed", "0", "seed must be an integer, got the string '0'."),
    ("seed", True, "seed must be an integer, got true."),
    ("seed", DELETE, "seed is missing."),
    ("profile", 3, "profile must be a string, got 3."),
    ("warnings", "careful", "warnings must be a list of strings, got the string 'careful'."),
    ("warnings", ["ok", 1], "warnings[1] must be a string, got 1."),
    ("versions", [], "versions must be an object, got a list of 0."),
    ("versions.torch", 2.14, "versions.torch must be a string, got 2.14."),
    ("settings", [], "settings must be an object, got a list of 0."),
    ("created", 2026, "created must be a string, got 2026."),
    ("dpaudit_version", None, "dpaudit_version must be a string, got null."),
    ("manifest_missing", "seed", "manifest_missing must be a list of strings, got the string 'seed'."),
    # the image-set summaries and the manifest inside the result
    ("synthetic.count", "1000", "synthetic.count must be a non-negative integer, got the string '1000'."),
    ("synthetic.shape", "1x8x8", "synthetic.shape must be a list of non-negative integers, got the string '1x8x8'."),
    ("synthetic.shape.1", -8, "synthetic.shape[1] must be a non-negative integer, got -8."),
    ("reference.members", "all", "reference.members must be an object, got the string 'all'."),
    ("reference.split_id", 7, "reference.split_id must be a string or null, got 7."),
    ("feature_extractor.dim", 6.4, "feature_extractor.dim must be a non-negative integer or null, got 6.4."),
    ("manifest.epsilon", "ten", "manifest.epsilon must be a number in [0, inf] or null, got the string 'ten'."),
    ("manifest.generator", DELETE, "manifest.generator is missing."),
    # every CheckResult field
    (F, None, "checks.fidelity must be an object, got null."),
    (f"{F}.check", DELETE, "checks.fidelity.check is missing."),
    (f"{F}.metrics", [], "checks.fidelity.metrics must be an object, got a list of 0."),
    (f"{F}.details", [], "checks.fidelity.details must be an object, got a list of 0."),
    (f"{F}.figures", [], "checks.fidelity.figures must be an object, got a list of 0."),
    (f"{F}.figures.samples", "iVBOR", "checks.fidelity.figures.samples must be an object, got the string 'iVBOR'."),
    (f"{F}.figures.samples.png", 3, "checks.fidelity.figures.samples.png must be a string, got 3."),
    (f"{F}.figures.samples.caption", DELETE, "checks.fidelity.figures.samples.caption is missing."),
    (f"{F}.seconds", "fast", "checks.fidelity.seconds must be a finite number, got the string 'fast'."),
    (f"{F}.title", 1, "checks.fidelity.title must be a string, got 1."),
    (f"{F}.question", ["why"], "checks.fidelity.question must be a string, got a list of 1."),
    (f"{F}.headlines", "fid", "checks.fidelity.headlines must be a list of strings, got the string 'fid'."),
    (f"{F}.headlines", [1], "checks.fidelity.headlines[0] must be a string, got 1."),
    # every Metric field
    (f"{M}.ci", [0.5], f"{M}.ci must be a list of two numbers or null, got a list of 1."),
    (f"{M}.ci", [0.1, 0.5, 0.9], f"{M}.ci must be a list of two numbers or null, got a list of 3."),
    (f"{M}.ci", [0.1, "0.5"], f"{M}.ci[1] must be a finite number or null, got the string '0.5'."),
    (f"{M}.ci", {"low": 0.1}, f"{M}.ci must be a list of two numbers or null, got an object."),
    (f"{M}.range", [0], f"{M}.range must be a list of two numbers or null, got a list of 1."),
    (f"{M}.n", [180], f"{M}.n must be an object, got a list of 1."),
    (f"{M}.n", {"members": "180"}, f"{M}.n.members must be a non-negative integer, got the string '180'."),
    (f"{M}.n", {"members": True}, f"{M}.n.members must be a non-negative integer, got true."),
    (f"{M}.n", {"members": 1.5}, f"{M}.n.members must be a non-negative integer, got 1.5."),
    (f"{M}.value", "0.56", f"{M}.value must be a finite number or null, got the string '0.56'."),
    (f"{M}.value", False, f"{M}.value must be a finite number or null, got false."),
    (f"{M}.value", DELETE, f"{M}.value is missing."),
    (f"{M}.direction", "up", f"{M}.direction must be one of 'higher', 'lower', 'target', 'info', got the string 'up'."),
    (f"{M}.direction", None, f"{M}.direction must be one of 'higher', 'lower', 'target', 'info', got null."),
    (f"{M}.meaning", DELETE, f"{M}.meaning is missing."),
    (f"{M}.baseline", "0.5", f"{M}.baseline must be a finite number or null, got the string '0.5'."),
    (f"{M}.target", [0.5], f"{M}.target must be a finite number or null, got a list of 1."),
    ("checks.membership.metrics", {"a b": {}}, "checks.membership.metrics['a b'].value is missing."),
    ("checks.membership.metrics", {"auc": 0.5}, "checks.membership.metrics.auc must be an object, got 0.5."),
    # numbers anywhere, the free-form details included
    ("checks.similarity.details.threshold", float("nan"),
     "checks.similarity.details.threshold must be a finite number (JSON has no NaN or Infinity; write null), got NaN."),
    ("settings.k", float("-inf"), "settings.k must be a finite number (JSON has no NaN or Infinity; write null), got -Infinity."),
    ("checks.similarity.details.threshold", 1e301,
     "checks.similarity.details.threshold must be a number between -1e+300 and 1e+300, got 1e+301."),
    ("checks.membership.details.attacks.nn_distance.auc", 10**400,
     "checks.membership.details.attacks.nn_distance.auc must be a number between -1e+300 and 1e+300, got an integer of 401 digits."),
]


@pytest.mark.parametrize("path, value, message", BAD_FIELDS, ids=[f"{p}={v!r}"[:60] for p, v, _ in BAD_FIELDS])
def test_a_field_of_the_wrong_type_is_one_sentence_naming_the_file_and_the_field(tmp_path, path, value, message):
    error, name = refusal(tmp_path, mutated(path, value))
    assert error == f"{name}: {message}"


BAD_TEXTS = [
    ("[]", "not a dpaudit result: the document is a list of 0, not an object with schema 'dpaudit.result/1'."),
    ('{"schema": "dpaudit.result/2"}', "not a dpaudit result (schema 'dpaudit.result/2', expected 'dpaudit.result/1')."),
    ('{"seed": 0}', "not a dpaudit result (no schema, expected 'dpaudit.result/1')."),
    ('{"schema": "dpaudit.result/1", "seed": 1' + "0" * 5000 + "}",
     "not valid JSON (an integer of more than 4,300 digits)."),
    ("{\"schema\": ", "not valid JSON (Expecting value: line 1 column 12 (char 11))."),
    ("[" * 100_000 + "]" * 100_000, "nests 100,000 levels deep, over the limit of 64."),
    ('{"a": ' * 65 + "1" + "}" * 65, "nests 65 levels deep, over the limit of 64."),
]


@pytest.mark.parametrize("text, message", BAD_TEXTS, ids=[m[:30] for _, m in BAD_TEXTS])
def test_a_bad_document_is_one_sentence_naming_the_file(tmp_path, text, message):
    error, name = refusal(tmp_path, text=text)
    assert error == f"{name}: {message}"


def test_nesting_up_to_the_limit_reads_and_brackets_in_strings_do_not_count(tmp_path):
    deep = 0
    for _ in range(MAX_DEPTH - 4):  # the result, its checks, the check and its details: 4 levels
        deep = [deep]
    text = '\\"[{' * 10_000  # escaped quotes too: they do not end the string
    doc = mutated("checks.fidelity.details", {"deep": deep, "text": text, '"[[[': "key"})
    path = tmp_path / "result.json"
    path.write_text(json.dumps(doc))
    assert load_result(path).checks["fidelity"].details["text"] == text
    doc["checks"]["fidelity"]["details"]["deep"] = [deep]
    path.write_text(json.dumps(doc))
    with pytest.raises(DpauditError, match=r"nests 65 levels deep, over the limit of 64\.$"):
        load_result(path)


def test_a_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "result.json"
    path.touch()
    os.truncate(path, MAX_RESULT_BYTES + 1)  # sparse: nothing is written to disk, and nothing should be read
    with pytest.raises(DpauditError) as info:
        load_result(path)
    assert str(info.value) == f"{path}: {MAX_RESULT_BYTES + 1:,} bytes is over the limit of 64 MiB for a file."


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file."),
        (lambda p: p.mkdir(), "is a folder, not a file."),
        (lambda p: p.write_bytes(b'\xff{"schema": 1}'), "not UTF-8 text (byte 0xff at offset 0)."),
    ],
    ids=["missing", "folder", "not utf-8"],
)
def test_a_file_that_cannot_be_read(tmp_path, make, message):
    path = tmp_path / "result.json"
    make(path)
    with pytest.raises(DpauditError) as info:
        load_result(path)
    assert str(info.value) == f"{path}: {message}"


def test_a_file_name_cannot_forge_lines(tmp_path):
    path = tmp_path / "evil\nError: all good.json"
    with pytest.raises(DpauditError) as info:
        load_result(path)
    assert "\n" not in str(info.value) and "evil\\nError" in str(info.value)


def test_the_round_trip_is_exact(tmp_path):
    result = fake_result()
    back = load_result(result.save(tmp_path / "result.json"))
    assert back.to_dict() == result.to_dict()
    assert back.checks["membership"].metrics["auc"].ci == (0.52, 0.6000000000000001)


def test_unknown_fields_are_ignored_and_known_ones_still_checked(tmp_path):
    doc = copy.deepcopy(BASE)
    doc["from_the_future"] = {"anything": [1, 2]}
    doc["checks"]["fidelity"]["new_field"] = "x"
    doc["checks"]["fidelity"]["metrics"]["fid"]["unit"] = "distance"
    doc["checks"]["fidelity"]["figures"]["samples"]["alt"] = "grid"
    path = tmp_path / "result.json"
    path.write_text(json.dumps(doc))
    result = load_result(path)
    assert result.checks["fidelity"].metrics["fid"].value == 35.0
    assert result.checks["fidelity"].figures["samples"]["alt"] == "grid"  # free-form parts keep what they hold
    assert "from_the_future" not in result.to_dict()


def test_an_old_result_without_the_newer_fields_reads(tmp_path):
    doc = copy.deepcopy(BASE)
    del doc["settings"]
    for check in doc["checks"].values():
        for key in ("title", "question", "headlines", "figures", "details", "seconds"):
            del check[key]
        for metric in check["metrics"].values():
            for key in ("range", "ci", "baseline", "target", "n"):
                del metric[key]
    doc["manifest"] = None
    path = tmp_path / "result.json"
    path.write_text(json.dumps(doc))
    result = load_result(path)
    assert result.settings == {} and result.manifest is None
    fidelity = result.checks["fidelity"]
    assert (fidelity.title, fidelity.question, fidelity.headlines, fidelity.seconds) == ("", "", [], 0.0)
    assert fidelity.metrics["fid"].ci is None and fidelity.metrics["fid"].n == {}


def test_a_null_value_reads_as_nan_and_a_null_bound_as_none(tmp_path):
    doc = mutated(f"{M}.value", None)
    doc["checks"]["membership"]["metrics"]["auc"]["ci"] = [None, 0.6]
    path = tmp_path / "result.json"
    path.write_text(json.dumps(doc))
    auc = load_result(path).checks["membership"].metrics["auc"]
    assert auc.value != auc.value and auc.ci == (None, 0.6)


# ---- the commands that read result.json ----

@pytest.mark.parametrize("command", ["report", "gate", "compare"])
def test_the_commands_refuse_a_bad_result_in_one_line_with_exit_code_2(tmp_path, command):
    bad = tmp_path / "result.json"
    bad.write_text(json.dumps(mutated(f"{M}.ci", [0.5])))
    good = fake_result().save(tmp_path / "good.json")
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nmetric = "membership.auc"\nmax = 0.9\n')
    args = {"report": [str(bad), "--out", str(tmp_path / "r.html")],
            "gate": [str(bad), "--policy", str(policy)],
            "compare": [str(good), str(bad), "--out", str(tmp_path / "c.html")]}[command]
    run = CliRunner().invoke(cli, [command, *args])
    assert run.exit_code == 2, run.output
    assert run.output.splitlines() == [f"Error: {bad}: {M}.ci must be a list of two numbers or null, got a list of 1."]


# ---- atomic save ----

def test_save_is_atomic_a_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = fake_result(auc=0.5).save(tmp_path / "result.json")
    before = path.read_bytes()

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(DpauditError) as info:
        fake_result(auc=0.9).save(path)
    assert str(info.value) == f"{path}: could not be written (No space left on device); any previous file is unchanged."
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temporary file left


def test_save_is_atomic_a_disk_full_halfway_keeps_the_old_file(tmp_path, monkeypatch):
    path = fake_result(auc=0.5).save(tmp_path / "result.json")
    before = path.read_bytes()
    real_write_text = Path.write_text

    def half_then_full(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(DpauditError, match=r"result\.json: could not be written \(No space left on device\)"):
        fake_result(auc=0.9).save(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_save_makes_its_folder(tmp_path):
    path = fake_result().save(tmp_path / "deep" / "er" / "result.json")
    assert path == tmp_path / "deep" / "er" / "result.json" and load_result(path).profile == "quick"


def test_save_gives_the_file_the_usual_mode(tmp_path):
    path = fake_result().save(tmp_path / "result.json")
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert os.stat(path).st_mode == os.stat(plain).st_mode


def test_save_under_a_file_is_one_sentence(tmp_path):
    (tmp_path / "audit").write_text("not a folder")
    target = tmp_path / "audit" / "result.json"
    with pytest.raises(DpauditError) as info:
        fake_result().save(target)
    assert str(info.value).startswith(f"{target}: cannot write here (") and "\n" not in str(info.value)


def test_from_dict_takes_what_to_dict_gives():
    assert AuditResult.from_dict(BASE).to_dict() == BASE
