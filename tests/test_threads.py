"""Thread counts chosen from the CPUs the process may use, overridable, idle workers asleep."""

import os
import subprocess
import sys

import pytest

from dpaudit import threads
from dpaudit.errors import DpauditError


@pytest.fixture
def clean_env(monkeypatch):
    for key in ("DPAUDIT_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(key, raising=False)
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch else None
    yield monkeypatch
    if torch:
        torch.set_num_threads(before)


def test_usable_cpus_is_the_affinity_capped_by_a_cgroup_quota(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "CGROUP_V2_MAX", tmp_path / "cpu.max")
    monkeypatch.setattr(threads, "CGROUP_V1_QUOTA", tmp_path / "none")
    assert threads.usable_cpus() == 4  # no cgroup file
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.usable_cpus() == 4
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs of quota
    assert threads.usable_cpus() == 1
    (tmp_path / "cpu.max").write_text("800000 100000\n")
    assert threads.usable_cpus() == 4
    monkeypatch.setattr(threads, "CGROUP_V2_MAX", tmp_path / "absent")
    monkeypatch.setattr(threads, "CGROUP_V1_QUOTA", tmp_path / "quota")
    monkeypatch.setattr(threads, "CGROUP_V1_PERIOD", tmp_path / "period")
    (tmp_path / "quota").write_text("200000")
    (tmp_path / "period").write_text("100000")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert threads.usable_cpus() == 2


def test_the_option_then_the_environment_then_the_cpus(clean_env):
    clean_env.setattr(threads, "usable_cpus", lambda: 3)
    assert threads.configure() == 3 and os.environ["OMP_NUM_THREADS"] == "3" and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    clean_env.setenv("OMP_NUM_THREADS", "2")
    assert threads.configure() == 2
    clean_env.setenv("DPAUDIT_THREADS", "1")
    assert threads.configure() == 1
    assert threads.configure(4) == 4
    clean_env.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stays
    threads.configure(1)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    torch = sys.modules.get("torch")
    if torch:
        assert torch.get_num_threads() == 1
    for bad in ("0", "two"):
        clean_env.setenv("DPAUDIT_THREADS", bad)
        with pytest.raises(DpauditError, match="DPAUDIT_THREADS"):
            threads.configure()


def test_the_cli_starts_torch_with_the_chosen_threads():
    probe = ("import sys\nfrom dpaudit.cli import main\nsys.argv = ['dpaudit', '--threads', '1', 'datasets']\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\nimport torch\nprint(torch.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "DPAUDIT_THREADS")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.split()[-1] == "1", out.stderr
