"""The CLI skeleton: version, datasets, export, and one-line errors with exit code 2."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dpaudit import __version__
from dpaudit.cli import cli
from dpaudit.datasets import load_split
from dpaudit.images import load_images, to_uint8


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "dpaudit"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


def test_datasets_lists_digits():
    result = run("datasets")
    assert result.exit_code == 0
    assert "digits" in result.output and "embedded" in result.output


@pytest.mark.mnist
def test_datasets_finds_mnist_through_env(monkeypatch):
    result = run("datasets")
    assert "DPAUDIT_DATA" in result.output.split("mnist", 1)[1].split("fashion-mnist")[0]
    assert result.output.count("(DPAUDIT_DATA)") >= 2


@pytest.mark.parametrize("fmt", ["png", "npz"])
@pytest.mark.parametrize("role", ["members", "holdout", "test"])
def test_export_round_trip_digits(tmp_path, fmt, role):
    result = run("export", "digits", "--split", role, "--out", str(tmp_path / "out"), "--format", fmt, "--seed", "2")
    assert result.exit_code == 0, result.output
    reference = load_split("digits", seed=2)
    expected = getattr(reference, role)
    back = load_images(tmp_path / "out")
    assert np.array_equal(to_uint8(back.x).numpy(), to_uint8(expected.x).numpy())
    assert np.array_equal(back.y.numpy(), expected.y.numpy())
    split = json.loads((tmp_path / "out" / "split.json").read_text())
    assert split["split_id"] == reference.split_id and split["count"] == len(expected)


@pytest.mark.mnist
def test_export_round_trip_mnist_members(tmp_path, mnist):
    result = run("export", "mnist", "--split", "members", "--out", str(tmp_path / "m"), "--format", "npz")
    assert result.exit_code == 0, result.output
    back = load_images(tmp_path / "m")
    assert back.fingerprint() == mnist.members.fingerprint()
    assert json.loads((tmp_path / "m" / "split.json").read_text())["split_id"] == mnist.split_id


@pytest.mark.parametrize(
    "args, match",
    [
        (["export", "nope", "--split", "test", "--out", "x"], "unknown dataset 'nope'"),
        (["export", "digits", "--split", "train", "--out", "x"], "Invalid value for '--split'"),
        (["export", "digits", "--split", "test"], "Missing option '--out'"),
    ],
)
def test_user_mistakes_exit_2_without_traceback(args, match):
    result = run(*args)
    assert result.exit_code == 2
    assert match in result.output
    assert "Traceback" not in result.output


def test_export_refuses_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    result = run("export", "digits", "--split", "test", "--out", str(tmp_path))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"Error: {tmp_path}: the folder is not empty; choose a new --out."]


LIGHT_COMMANDS = {
    "--help": [],
    "--version": [],
    "datasets": [],
    "gate": ["{result}", "--policy", "{policy}"],
    "report": ["{result}", "--out", "{html}"],
}


@pytest.mark.parametrize("command", list(LIGHT_COMMANDS))
def test_light_commands_and_import_dpaudit_do_not_import_torch(command, tmp_path):
    from tests.reports.fakes import fake_result

    files = {"result": fake_result().save(tmp_path / "result.json"), "policy": tmp_path / "policy.toml",
             "html": tmp_path / "report.html"}
    files["policy"].write_text('[[rule]]\nmetric = "membership.auc"\nmax = 0.9\n')
    args = [command] + [a.format(**files) for a in LIGHT_COMMANDS[command]]
    probe = (
        "import sys\n"
        "import dpaudit\n"
        "assert 'torch' not in sys.modules, 'import dpaudit imported torch'\n"
        "from dpaudit.cli import main\n"
        f"sys.argv = ['dpaudit'] + {args!r}\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code or 0\n"
        "print('\\nTORCH' if 'torch' in sys.modules else '\\nNO-TORCH', code)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "NO-TORCH 0", out.stdout[-500:]


def test_the_public_api_is_exported_lazily():
    import dpaudit
    from dpaudit.audit.pipeline import evaluate
    from dpaudit.generators import GENERATORS

    assert dpaudit.evaluate is evaluate and dpaudit.GENERATORS is GENERATORS
    assert {"evaluate", "AuditResult", "load_result", "apply_policy", "load_images", "GENERATORS"} <= set(dir(dpaudit))
    with pytest.raises(AttributeError):
        dpaudit.no_such_name


@pytest.mark.parametrize("args, option", [
    (["evaluate", "--synthetic", ".", "--dataset", "digits", "--seed", "-1"], "--seed"),
    (["evaluate", "--synthetic", ".", "--dataset", "digits", "--seed", str(2**32)], "--seed"),
    (["evaluate", "--synthetic", ".", "--dataset", "digits", "--split-seed", "-1"], "--split-seed"),
    (["export", "digits", "--split", "members", "--out", "x", "--seed", str(2**64 + 1)], "--seed"),
    (["generate", "dp-merf", "--dataset", "digits", "--epsilon", "1", "--num", "2", "--out", "x", "--seed", str(2**70)], "--seed"),
    (["generate", "dp-merf", "--dataset", "digits", "--epsilon", "1", "--num", "2", "--out", "x", "--split-seed", "-3"], "--split-seed"),
    (["demo", "--seed", "-1"], "--seed"),
    (["generate", "dp-merf", "--dataset", "digits", "--epsilon", "1", "--num", "0", "--out", "x"], "--num"),
])
def test_seeds_and_counts_out_of_range_are_refused_before_any_work(args, option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*args)
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output and "range" in result.output
    assert not any(tmp_path.iterdir())


def test_a_budget_too_small_to_calibrate_is_one_sentence_and_leaves_nothing(tmp_path):
    out = tmp_path / "syn"
    result = run("generate", "dp-merf", "--dataset", "digits", "--epsilon", "1e-9", "--num", "2", "--out", str(out))
    assert result.exit_code == 2 and "--epsilon 1e-09 at delta 1e-05 is too small" in result.output
    assert result.output.count("\n") <= 1 + result.output.count("Warning") and not out.exists()


def test_an_unwritable_output_folder_is_refused_before_the_audit(tmp_path, monkeypatch):
    from dpaudit.audit import pipeline

    monkeypatch.setattr(pipeline, "evaluate", lambda *a, **k: pytest.fail("the audit ran"))
    (tmp_path / "file").write_text("x")
    result = run("evaluate", "--synthetic", str(tmp_path), "--dataset", "digits", "--out", str(tmp_path / "file" / "out"))
    assert result.exit_code == 2 and "not writable" in result.output


def test_compare_reads_every_set_before_the_first_audit(tmp_path, monkeypatch, digits):
    from dpaudit.audit import pipeline
    from dpaudit.images import save_images

    monkeypatch.setattr(pipeline, "evaluate", lambda *a, **k: pytest.fail("an audit ran before B was read"))
    save_images(digits.test.subset(range(20)), tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.png").write_bytes(b"not a png")
    result = run("compare", "--synthetic", str(tmp_path / "a"), "--synthetic", str(tmp_path / "b"), "--dataset", "digits",
                 "--out", str(tmp_path / "c.html"))
    assert result.exit_code == 2 and "x.png" in result.output


def test_a_file_name_cannot_forge_a_second_error_line(tmp_path):
    result = run("gate", str(tmp_path / "a\nError: all rules pass.json"), "--policy", str(tmp_path / "p.toml"))
    assert result.exit_code == 2 and result.output.count("Error:") == 2 and "\\nError: all rules pass" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_bad_split_id_in_a_manifest_names_the_manifest(tmp_path, digits):
    from dpaudit.images import save_images
    from dpaudit.manifest import Manifest

    save_images(digits.test.subset(range(20)), tmp_path / "syn")
    Manifest.new("g", dataset="digits", split_id="digits:s0:m10:h5:000000000000").write(tmp_path / "syn")
    result = run("evaluate", "--synthetic", str(tmp_path / "syn"), "--dataset", "digits", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and f"the manifest.json of {tmp_path / 'syn'}: split id 'digits:s0:m10:h5:000000000000'" in result.output


def test_audit_training_refutes_a_copying_script_and_the_gate_fails_it(tmp_path):
    from tests.audit.training_fixtures import copy_command

    out = tmp_path / "audit"
    result = run("audit-training", "--command", copy_command(tmp_path), "--data-format", "npz", "--dataset", "digits",
                 "--epsilon", "1", "--seed", "0", "--no-features", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "verdict: refuted" in result.output and (out / "report.html").is_file()
    assert (out / "runs" / "run-00.log").is_file()
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rule]]\nmetric = "training_audit.epsilon_lower_bound"\nmax_from = "manifest.epsilon"\n')
    assert run("gate", str(out / "result.json"), "--policy", str(policy)).exit_code == 1


def test_audit_training_refuses_two_procedures_and_a_failing_script_names_its_log(tmp_path):
    from tests.audit.training_fixtures import copy_command

    both = run("audit-training", "--generator", "dp-merf", "--command", "x {members} {out}", "--dataset", "digits",
               "--epsilon", "1")
    assert both.exit_code == 2 and "exactly one of --generator" in both.output
    out = tmp_path / "audit"
    failed = run("audit-training", "--command", copy_command(tmp_path, "fail"), "--data-format", "npz",
                 "--dataset", "digits", "--epsilon", "1", "--seed", "0", "--no-features", "--out", str(out))
    assert failed.exit_code == 2 and "exited with status 1" in failed.output and "run-00.log" in failed.output
    assert not (out / "result.json").exists()
