"""Data-parallel DP-SGD (gloo, 2 processes on the CPU) against one process: the same Poisson
batches split between the processes, the noise added once per step (counted), the same
accountant history and epsilon, and the same weights up to the order of summation."""

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from dpaudit.generators import LipschitzVAEGenerator
from dpaudit.manifest import read_manifest
from tests.generators import distributed_worker
from tests.generators.distributed_worker import STEPS

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=["per-sample", "ghost"])
def runs(tmp_path_factory, request):
    """{"single": rank 0 of one process, "ranks": [rank 0, rank 1] of two}, for each way of clipping."""
    single, pair = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("pair")
    distributed_worker.train(single, 0, request.param)
    mp.spawn(distributed_worker.spawned, args=(2, str(pair), free_port(), request.param), nprocs=2, join=True)
    load = lambda path: torch.load(path, weights_only=True)  # noqa: E731
    return {"single": load(single / "rank0.pt"), "ranks": [load(pair / f"rank{r}.pt") for r in (0, 1)]}


def test_the_processes_share_each_poisson_batch(runs):
    rank0, rank1 = runs["ranks"]
    whole = runs["single"]["batch_sizes"]
    assert len(whole) == STEPS and sum(whole) > 0
    assert [a + b for a, b in zip(rank0["batch_sizes"], rank1["batch_sizes"])] == whole
    assert all(0 <= a - b <= 1 for a, b in zip(rank0["batch_sizes"], rank1["batch_sizes"]))


def test_each_process_draws_its_own_randomness_and_rank_0_the_single_process_draws(runs):
    rank0, rank1 = runs["ranks"]
    assert rank0["draws"] == runs["single"]["draws"]
    assert not set(rank0["draws"]) & set(rank1["draws"])


def test_noise_is_added_once_per_step(runs):
    n_params = len(runs["single"]["params"])
    assert runs["single"]["noise_calls"] == STEPS * n_params
    assert [r["noise_calls"] for r in runs["ranks"]] == [STEPS * n_params, 0]


def test_the_accounting_and_the_weights_equal_one_process(runs):
    single = runs["single"]
    for rank in runs["ranks"]:
        assert rank["history"] == single["history"]
        for p, q in zip(rank["params"], single["params"]):
            torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


def generate(out, processes: int) -> subprocess.CompletedProcess:
    """`dpaudit generate lipschitz-vae` on digits in one process, or under torchrun in `processes`."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    overrides = [arg for key, value in LipschitzVAEGenerator.test_overrides.items() for arg in ("--set", f"{key}={value}")]
    command = [sys.executable, *launcher, "-m", "dpaudit", "generate", "lipschitz-vae", "--dataset", "digits",
               "--epsilon", "5", "-n", "20", "--out", str(out), "--seed", "1", *overrides]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_torchrun_generate_writes_once_with_the_single_process_accounting(tmp_path):
    one, two = generate(tmp_path / "one", 1), generate(tmp_path / "two", 2)
    for done in (one, two):
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count("wrote 20 lipschitz-vae images") == 1  # rank 0 alone writes
    single, pair = read_manifest(tmp_path / "one"), read_manifest(tmp_path / "two")
    # The weights differ in their last bits (the order of summation), so does what is measured on them.
    accounting = lambda details: {k: v for k, v in details.items() if k not in ("wall_time_s", "lipschitz_analysis")}  # noqa: E731
    assert pair.epsilon == single.epsilon and accounting(pair.details) == accounting(single.details)
    assert pair.details["history"] == single.details["history"]
    lipschitz = [m.details["lipschitz_analysis"]["certified_lipschitz"] for m in (single, pair)]
    assert lipschitz[1] == pytest.approx(lipschitz[0], rel=1e-4)
    assert len(list((tmp_path / "two").rglob("*.png"))) == 20 and not (tmp_path / "two" / ".checkpoint").exists()


def test_a_generator_that_is_not_data_parallel_is_refused_under_torchrun(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "dpaudit", "generate",
         "dp-merf", "--dataset", "digits", "--epsilon", "5", "-n", "20", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode != 0
    assert "dp-merf does not train data-parallel; under torchrun use one of bn-matching, latent-diffusion, lipschitz-vae" in done.stderr + done.stdout
