"""The CI gate: policy parsing, verdicts against hand-built results, JUnit XML, exit codes."""

import dataclasses
import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dpaudit.audit.gate import (
    MAX_POLICY_BYTES,
    Policy,
    apply_policy,
    format_table,
    load_policy,
    parse_policy,
    write_junit,
)
from dpaudit.audit.features import load_extractor
from dpaudit.audit.pipeline import evaluate
from dpaudit.audit.profiles import QUICK
from dpaudit.audit.scorecard import format_scorecard, scorecard
from dpaudit.cli import cli
from dpaudit.datasets import Reference, load_official, load_split, split_indices
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet
from dpaudit.manifest import Manifest
from tests.reports.fakes import fake_result
from tests.transformed_copies import jittered

POLICY = """
[[rule]]
metric = "membership.auc"
max = 0.6

[[rule]]
metric = "membership.tpr_at_fpr_0p1pct"
max = 0.01

[[rule]]
metric = "similarity.near_copy_excess"
max = 0.01

[[rule]]
name = "empirical epsilon within the claim"
metric = "membership.epsilon_lower_bound"
max_from = "manifest.epsilon"

[[rule]]
metric = "utility.tstr_accuracy"
min = 0.8
"""


def sparse(path, size: int) -> None:
    """A file of `size` bytes that takes no room on disk."""
    path.touch()
    os.truncate(path, size)


def policy(text: str):
    import tomllib

    return parse_policy(tomllib.loads(text), "policy.toml")


def test_all_rules_hold():
    verdict = apply_policy(fake_result(auc=0.56, eps_lb=0.4, tstr=0.81, epsilon=10.0), policy(POLICY))
    assert verdict.passed and verdict.exit_code == 0
    assert [o.value for o in verdict.outcomes] == [0.56, 0.002, 0.002, 0.4, 0.81]
    # the bound read from the manifest is the claimed epsilon
    assert verdict.outcomes[3].high == 10.0


def test_broken_rules_fail_with_exit_code_1():
    verdict = apply_policy(fake_result(auc=0.8, eps_lb=12.0, tstr=0.5, epsilon=10.0), policy(POLICY))
    assert not verdict.passed and verdict.exit_code == 1
    assert [o.passed for o in verdict.outcomes] == [False, True, True, False, False]
    assert "above 0.6" in verdict.outcomes[0].message
    assert "below 0.8" in verdict.outcomes[4].message
    assert verdict.summary() == "FAIL: 3 of 5 rules broken"


def test_bounds_are_inclusive_and_two_sided():
    two_sided = policy('[[rule]]\nmetric = "utility.tstr_accuracy"\nmin = 0.5\nmax = 0.81\n')
    assert apply_policy(fake_result(tstr=0.81), two_sided).passed
    assert apply_policy(fake_result(tstr=0.5), two_sided).passed
    assert not apply_policy(fake_result(tstr=0.8101), two_sided).passed
    assert not apply_policy(fake_result(tstr=0.4999), two_sided).passed


def test_fields_and_bounds_from_other_metrics():
    # ci_high of the attack AUC must stay under 0.6; the near-copy share under its holdout baseline
    rules = policy(
        '[[rule]]\nmetric = "membership.auc.ci_high"\nmax = 0.6\n'
        '[[rule]]\nmetric = "similarity.near_copy_share"\nmax_from = "similarity.near_copy_share.baseline"\n'
    )
    verdict = apply_policy(fake_result(auc=0.5), rules)
    assert [o.value for o in verdict.outcomes] == [pytest.approx(0.54), 0.012]
    assert verdict.outcomes[1].high == 0.010
    assert [o.passed for o in verdict.outcomes] == [True, False]


def test_nan_value_fails():
    result = fake_result()
    result.checks["membership"].metrics["auc"].value = math.nan
    verdict = apply_policy(result, policy('[[rule]]\nmetric = "membership.auc"\nmax = 0.6\n'))
    assert not verdict.passed
    assert "not measured" in verdict.outcomes[0].message


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[rule]]\nmetric = "membership.aucc"\nmax = 0.6\n', "has no metric 'aucc'"),
        ('[[rule]]\nmetric = "membership.auc.upper"\nmax = 0.6\n', "no field 'upper'"),
        ('[[rule]]\nmetric = "membership.tstr_accuracy.ci_low"\nmax = 0.6\n', "has no metric"),
        ('[[rule]]\nmetric = "memorization.max_member_ssim"\nmax = 0.6\n', "check 'memorization' was not run"),
        ('[[rule]]\nmetric = "fidelity.recall.ci_low"\nmin = 0.1\n', "no field 'ci_low'"),
        ('[[rule]]\nmetric = "fidelity.recall.baseline"\nmin = 0.1\n', "is not set"),
    ],
)
def test_a_path_that_names_nothing_is_an_error(text, message):
    with pytest.raises(DpauditError, match=message) as info:
        apply_policy(fake_result(), policy(text))
    assert str(info.value).startswith("policy.toml: rule 1: ")  # the policy file and the rule


def test_errors_of_applying_a_rule_name_the_policy_file_and_the_rule(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(POLICY + '\n[[rule]]\nmetric = "membership.auc"\nmax_from = "manifest.generator"\n')
    with pytest.raises(DpauditError) as info:
        apply_policy(fake_result(), load_policy(path))
    assert str(info.value) == f"{path}: rule 6: 'manifest.generator' is not a finite number (got the string 'dp-merf')."


def test_claim_rule_without_a_claimed_epsilon_is_an_error():
    rule = policy('[[rule]]\nmetric = "membership.epsilon_lower_bound"\nmax_from = "manifest.epsilon"\n')
    with pytest.raises(DpauditError, match="manifest has no 'epsilon'"):
        apply_policy(fake_result(epsilon=None), rule)
    result = fake_result()
    result.manifest = None
    with pytest.raises(DpauditError, match="manifest has no 'epsilon'"):
        apply_policy(result, rule)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no rules"),
        ("title = 'x'\n[[rule]]\nmetric = 'a.b'\nmax = 1\n", "unknown top-level keys"),
        ("[[rule]]\nmax = 1\n", "needs a 'metric'"),
        ("[[rule]]\nmetric = 'membership.auc'\n", "has no bound"),
        ("[[rule]]\nmetric = 'membership.auc'\nmaximum = 1\n", "unknown keys \\['maximum'\\]"),
        ("[[rule]]\nmetric = 'membership.auc'\nmax = '0.6'\n", "'max' must be a finite number"),
        ("[[rule]]\nmetric = 'membership.auc'\nmax = true\n", "'max' must be a finite number"),
        ("[[rule]]\nmetric = 'membership.auc'\nmax = nan\n", "'max' must be a finite number"),
        ("[[rule]]\nmetric = 'membership.auc'\nmin = 0.7\nmax = 0.6\n", "min 0.7 is above max 0.6"),
        ("[[rule]]\nmetric = 'membership.auc'\nmax = 0.6\nmax_from = 'manifest.epsilon'\n", "both 'max' and 'max_from'"),
        ("[[rule]]\nmetric = 'auc'\nmax = 0.6\n", "must be a path like"),
        ("[[rule]]\nmetric = 'membership.auc'\nmax_from = 3\n", "'max_from' must be a path"),
        ("rule = 3\n", "no rules"),
    ],
)
def test_bad_policies_are_refused(text, message):
    with pytest.raises(DpauditError, match=message):
        policy(text)


BAD_RULES = [
    ("[rule]\nmetric = 'membership.auc'\nmax = 1\n",
     "'rule' must be an array of tables: write [[rule]], with two brackets, above each rule."),
    ("rule = ['membership.auc']\n", "rule 1 must be a [[rule]] table, got the string 'membership.auc'."),
    ("[[rule]]\nmetric = ['membership.auc']\nmax = 1\n",
     "rule 1: 'metric' must be a path like 'check.metric' or 'check.metric.field', got a list of 1."),
    ("[[rule]]\nmetric = 'membership. auc'\nmax = 1\n",
     "rule 1: 'metric' must be a path like 'check.metric' or 'check.metric.field', got the string 'membership. auc'."),
    ("[[rule]]\nmetric = 'membership.auc'\nmax = 1\n[[rule]]\nmetric = 'utility.tstr_accuracy'\nmin = {value = 0.8}\n",
     "rule 2: 'min' must be a finite number, got a table."),
    ("[[rule]]\nmetric = 'membership.auc'\nmax = 1979-05-27\n", "rule 1: 'max' must be a finite number, got a date/time (1979-05-27)."),
    ("[[rule]]\nmetric = 'membership.auc'\nmax = 'x'\nname = 3\n", "rule 1: 'name' must be a string, got 3."),
    ("[[rule]]\nmetric = 'membership.auc'\nmax_from = 'manifest.epsilon.claimed'\n",
     "rule 1: 'max_from' must name one field of the manifest, like 'manifest.epsilon', got the string 'manifest.epsilon.claimed'."),
    ("[[rule]]\nmetric = 'membership.auc'\nmin_from = ['utility.tstr_accuracy']\n",
     "rule 1: 'min_from' must be a path like 'check.metric' or 'check.metric.field', got a list of 1."),
    ("[[rule]]\nmetric = 'membership.auc'\n'max\\n' = 1\n",
     "rule 1 has unknown keys ['max\\\\n']; allowed: metric, name, min, max, min_from, max_from."),
    ("x = " + "[" * 100_000 + "]" * 100_000 + "\n", "nests 100,000 levels deep, over the limit of 64."),
    ("x = " + "{a = " * 65 + "1" + "}" * 65 + "\n", "nests 65 levels deep, over the limit of 64."),
    ("a" + ".a" * 100_000 + " = 1\n", "has a dotted key of 100,001 parts, over the limit of 64."),
    ("[[rule]]\nmetric = 'membership.auc'\nmax = 0.6\n[" + "a." * 70 + "a]\n", "has a dotted key of 71 parts, over the limit of 64."),
    ("[[rule]]\nmetric =", "not valid TOML (Invalid value (at end of document))."),
]


@pytest.mark.parametrize("text, message", BAD_RULES, ids=[m[:40] for _, m in BAD_RULES])
def test_a_bad_policy_file_is_one_sentence_naming_the_file_and_the_rule(tmp_path, text, message):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(DpauditError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}: {message}"


def test_brackets_and_dots_in_strings_and_comments_do_not_count(tmp_path):
    path = tmp_path / "policy.toml"
    deep = "[" * 100 + "a." * 100
    path.write_text(f"# {deep}\n[[rule]]\nname = '{deep}'\nmetric = 'membership.auc'  # {deep}\nmax = 0.6\n"
                    f'[[rule]]\nname = """{deep}\n{deep}"""\nmetric = "utility.tstr_accuracy"\nmin = 0.5\n')
    assert [r.name for r in load_policy(path).rules] == [deep, f"{deep}\n{deep}"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"\xfe[[rule]]"), "not UTF-8 text (byte 0xfe at offset 0)."),
        (lambda p: p.mkdir(), "is a folder, not a policy file."),
        (lambda p: sparse(p, MAX_POLICY_BYTES + 1), f"{MAX_POLICY_BYTES + 1:,} bytes is over the limit of 1 MiB for a policy file."),
    ],
    ids=["not utf-8", "folder", "over the size cap"],
)
def test_a_policy_file_that_cannot_be_read(tmp_path, make, message):
    path = tmp_path / "policy.toml"
    make(path)
    with pytest.raises(DpauditError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}: {message}"


def test_load_policy_names_the_file(tmp_path):
    with pytest.raises(DpauditError, match="no such policy file"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]\nmetric =")
    with pytest.raises(DpauditError, match=r"bad\.toml: not valid TOML"):
        load_policy(bad)


def test_table_lists_every_rule():
    verdict = apply_policy(fake_result(auc=0.8), policy(POLICY))
    table = format_table(verdict).splitlines()
    assert len(table) == 2 + 5 + 2
    assert table[2].split() == ["membership.auc", "<=", "0.6", "0.8", "<=", "0.6", "FAIL"]
    assert "empirical epsilon within the claim" in table[5] and "(manifest.epsilon)" in table[5]
    assert table[-1] == "FAIL: 1 of 5 rules broken"


def test_junit_xml(tmp_path):
    verdict = apply_policy(fake_result(auc=0.8, eps_lb=12.0), policy(POLICY))
    path = write_junit(verdict, tmp_path / "junit" / "gate.xml", result_name="result.json")
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite.get("tests") == "5" and suite.get("failures") == "2" and suite.get("errors") == "0"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases][:1] == ["membership.auc <= 0.6"]
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["membership.auc <= 0.6", "empirical epsilon within the claim"]
    assert "above 10" in cases[3].find("failure").get("message")
    assert suite.find("system-out") is None  # no scorecard given


def test_junit_carries_the_scorecard(tmp_path):
    result = fake_result(auc=0.8, eps_lb=12.0)
    verdict = apply_policy(result, policy(POLICY))
    card = scorecard(result, verdict)
    suite = ET.parse(write_junit(verdict, tmp_path / "gate.xml", result_name="r.json", card=card)).getroot().find("testsuite")
    # the policy's utility rule holds (0.81 >= 0.8): useful by the policy, faithful by the defaults
    assert suite.get("name") == "dpaudit gate (r.json): faithful: partly; useful: yes; leaks: yes"
    assert suite.find("system-out").text == format_scorecard(card)
    assert "Does it leak?     YES" in suite.find("system-out").text


def test_junit_is_written_atomically(tmp_path, monkeypatch):
    verdict = apply_policy(fake_result(), policy(POLICY))
    path = write_junit(verdict, tmp_path / "gate.xml")
    before = path.read_bytes()
    assert before.startswith(b"<?xml version='1.0' encoding='utf-8'?>")

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", full_disk)
    with pytest.raises(DpauditError) as info:
        write_junit(apply_policy(fake_result(auc=0.9), policy(POLICY)), path)
    assert str(info.value) == f"{path}: could not be written (No space left on device); any previous file is unchanged."
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["gate.xml"]


def test_junit_over_a_folder_is_one_sentence(tmp_path):
    (tmp_path / "gate.xml").mkdir()
    with pytest.raises(DpauditError, match=r"gate\.xml: could not be written \(Is a directory\)"):
        write_junit(apply_policy(fake_result(), policy(POLICY)), tmp_path / "gate.xml")


@pytest.mark.parametrize("junit", ["file/gate.xml", "file/deeper/gate.xml"], ids=["under a file", "deeper under a file"])
def test_cli_junit_that_cannot_be_written_exits_2_in_one_line_and_prints_no_verdict(tmp_path, junit):
    (tmp_path / "policy.toml").write_text(POLICY)
    (tmp_path / "file").write_text("x")
    result = fake_result(auc=0.5).save(tmp_path / "result.json")
    run = CliRunner().invoke(cli, ["gate", str(result), "--policy", str(tmp_path / "policy.toml"), "--junit", str(tmp_path / junit)])
    assert run.exit_code == 2, run.output
    [line] = run.output.splitlines()  # the error alone: no table, no PASS before it
    assert re.fullmatch(rf"Error: {re.escape(str(tmp_path / junit))}: cannot write here \(.+\)\.", line), line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_cli_junit_in_a_read_only_folder_exits_2(tmp_path):
    (tmp_path / "policy.toml").write_text(POLICY)
    result = fake_result(auc=0.5).save(tmp_path / "result.json")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        run = CliRunner().invoke(cli, ["gate", str(result), "--policy", str(tmp_path / "policy.toml"),
                                       "--junit", str(locked / "gate.xml")])
    finally:
        locked.chmod(0o700)
    assert run.exit_code == 2 and run.output.splitlines() == [
        f"Error: {locked / 'gate.xml'}: cannot write here (Permission denied)."]


def test_cli_exit_codes(tmp_path):
    (tmp_path / "policy.toml").write_text(POLICY)
    fake_result(auc=0.5).save(tmp_path / "good.json")
    fake_result(auc=0.9).save(tmp_path / "bad.json")
    fake_result().save(tmp_path / "partial.json")
    runner = CliRunner()

    def gate(*args):
        return runner.invoke(cli, ["gate", *args], catch_exceptions=False)

    ok = gate(str(tmp_path / "good.json"), "--policy", str(tmp_path / "policy.toml"), "--junit", str(tmp_path / "j.xml"))
    assert ok.exit_code == 0, ok.output
    assert "PASS: all 5 rules hold" in ok.output and (tmp_path / "j.xml").is_file()

    failed = gate(str(tmp_path / "bad.json"), "--policy", str(tmp_path / "policy.toml"))
    assert failed.exit_code == 1 and "FAIL: 1 of 5 rules broken" in failed.output

    (tmp_path / "typo.toml").write_text('[[rule]]\nmetric = "membership.acu"\nmax = 0.6\n')
    typo = gate(str(tmp_path / "good.json"), "--policy", str(tmp_path / "typo.toml"))
    assert typo.exit_code == 2 and "no metric 'acu'" in typo.output and "Traceback" not in typo.output

    missing = gate(str(tmp_path / "nothere.json"), "--policy", str(tmp_path / "policy.toml"))
    assert missing.exit_code == 2 and "no such file" in missing.output
    usage = gate(str(tmp_path / "good.json"))
    assert usage.exit_code == 2 and "--policy" in usage.output


def readme_policy():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    return policy(re.search(r"```toml\n# policy.toml\n(.*?)```", readme, re.S).group(1))


def test_the_readme_policy_parses_and_applies():
    rules = readme_policy()
    assert [r.metric for r in rules.rules][:2] == ["membership.auc.ci_low", "membership.tpr_at_fpr_0p1pct.ci_low"]
    assert apply_policy(fake_result(), rules).passed


def test_the_readme_policy_does_not_cry_wolf_and_catches_jittered_copies():
    """Ten seeded draws on digits, each a fresh split (700 members, 360 holdout) whose 377
    remaining images are never seen: those images pass the README policy's leakage rules in at
    least 9 draws, and the same set with a quarter replaced by shifted, noisy member copies
    fails them in every draw. Only the checks the rules read run. The utility rule is left out:
    its 0.8 is meant for MNIST-sized sets, and 377 digits give a CNN about 0.78 on digits' test
    writers (benchmarks/bench_policy_draws.py runs the whole policy on MNIST, over more draws)."""
    train, test = load_official("digits")
    lenet = load_extractor(load_split("digits")).module  # one extractor for every draw, not one trained per split
    rules = readme_policy()
    leakage = Policy(tuple(r for r in rules.rules if not r.metric.startswith("utility.")), rules.source)
    assert len(leakage.rules) == len(rules.rules) - 1
    # the downstream attacks' CNN trained for 50 steps, not 300: the cost of 20 audits
    profile = dataclasses.replace(QUICK, classifiers=dataclasses.replace(QUICK.classifiers, epochs=1, min_steps=50))
    passed_clean, failed_copies = 0, 0
    for seed in range(10):
        members, holdout = split_indices(len(train), 700, 360, seed=seed)
        reference = Reference(train.subset(members), train.subset(holdout), test, f"digits-draw-{seed}")
        never_seen = train.subset(np.setdiff1d(np.arange(len(train)), np.r_[members, holdout]))
        quarter = len(never_seen) // 4
        copies_x, copies_y = never_seen.x.clone(), never_seen.y.clone()
        copies_x[:quarter] = jittered(reference.members.x[:quarter], seed=seed, family="shift", noise=0.02)
        copies_y[:quarter] = reference.members.y[:quarter]
        for synthetic, clean in ((never_seen, True), (ImageSet(copies_x, copies_y, 10), False)):
            result = evaluate(synthetic, reference, profile=profile, checks=["similarity", "membership"], seed=seed,
                              manifest=Manifest("draw", epsilon=1.0, delta=1e-5), extractor=lenet, progress=False)
            verdict = apply_policy(result, leakage)
            passed_clean += clean and verdict.passed
            failed_copies += not clean and not verdict.passed
    assert passed_clean >= 9, passed_clean
    assert failed_copies == 10, failed_copies
