"""Where the training audit's runs execute: `local` (one after another, in this process) or
`ray` (as Ray tasks: on a local Ray cluster started for the job, or on an existing one given by
its address). The runs are independent, so they parallelise perfectly; each job carries
everything it needs (the trainer, the members, its canaries, its seeds) and returns a Release.

With Ray, the members travel once (`ray.put`) and every task reads them from the object store;
each task asks for `cpus_per_run` CPUs, and Ray gives its worker that many threads. A run's
training data exists only inside the task (a temporary folder for a command), never beside
the audit's output. Ray is an optional extra: `pip install 'dpaudit[ray]'`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from dpaudit.audit.trainers import Release, TrainingFailed
from dpaudit.errors import DpauditError, quote_path
from dpaudit.files import write_atomic
from dpaudit.images import ImageSet
from dpaudit.privacy import PrivacyBudget

BACKENDS = ("local", "ray")


@dataclass
class Job:
    """One training run: `trainer` fitted on the members plus the `included` canaries, shuffled
    by `shuffle_seed`, under `budget` with `seed`, releasing `num_samples` images."""

    trainer: Any
    members: ImageSet
    included: ImageSet
    shuffle_seed: int
    budget: PrivacyBudget
    seed: int
    num_samples: int
    index: int = 0


def training_set(members: ImageSet, included: ImageSet, shuffle_seed: int) -> ImageSet:
    """The members and the included canaries in one seeded random order (a trainer could treat
    the last records differently; canaries must not stand out by their position)."""
    x, y = torch.cat([members.x, included.x]), torch.cat([members.y, included.y])
    order = torch.as_tensor(np.random.default_rng(shuffle_seed).permutation(len(x)), dtype=torch.long)
    return ImageSet(x[order], y[order], members.num_classes, name="training data",
                    source=f"{len(members)} members and {len(included)} canaries")


def execute(trainer: Any, members: ImageSet, included: ImageSet, shuffle_seed: int, budget: PrivacyBudget,
            seed: int, num_samples: int) -> Release:
    """Run one job's training in a temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="dpaudit-run-") as workdir:
        return trainer.train(training_set(members, included, shuffle_seed), budget, seed, Path(workdir), num_samples)


def run_jobs(jobs: Sequence[Job], *, backend: str = "local", ray_address: str | None = None, cpus_per_run: float = 1,
             log_dir: str | Path | None = None, progress: bool = True) -> list[Release]:
    """Every job's Release, in order. A failed training command becomes a DpauditError naming its
    log, which is written to `log_dir`/run-NN.log (as every run's log is, where there is one)."""
    if backend not in BACKENDS:
        raise DpauditError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}.")
    try:
        releases = _run_local(jobs, progress) if backend == "local" else _run_ray(jobs, ray_address, cpus_per_run, progress)
    except TrainingFailed as failed:
        log = _write_log(log_dir, failed.index, failed.log)
        where = f"see its log {quote_path(log)}" if log else "it printed nothing"
        raise DpauditError(f"run {failed.index}: {failed.reason}; {where}.") from None
    for job, release in zip(jobs, releases):
        _write_log(log_dir, job.index, release.log)
    return releases


def _write_log(log_dir, index: int, text: str) -> Path | None:
    if log_dir is None or not text:
        return None
    path = Path(log_dir) / f"run-{index:02d}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode())
    return path


def _failed_in(index: int, failed: TrainingFailed) -> TrainingFailed:
    failed.index = index
    return failed


def _run_local(jobs: Sequence[Job], progress: bool) -> list[Release]:
    releases = []
    for job in tqdm(jobs, desc="training runs", disable=not progress or len(jobs) < 2):
        try:
            releases.append(execute(job.trainer, job.members, job.included, job.shuffle_seed, job.budget, job.seed,
                                    job.num_samples))
        except TrainingFailed as failed:
            raise _failed_in(job.index, failed) from None
    return releases


def _run_ray(jobs: Sequence[Job], address: str | None, cpus_per_run: float, progress: bool) -> list[Release]:
    try:
        import ray
    except ImportError:
        raise DpauditError("--backend ray needs Ray: pip install 'dpaudit[ray]'.") from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except ConnectionError as e:
            raise DpauditError(f"--ray-address {address}: no Ray cluster there ({e}).") from None
    try:
        remote = ray.remote(num_cpus=cpus_per_run)(execute)
        members = {}  # the same members are put into the object store once
        refs = []
        for job in jobs:
            key = id(job.members)
            if key not in members:
                members[key] = ray.put(job.members)
            refs.append(remote.remote(job.trainer, members[key], job.included, job.shuffle_seed, job.budget,
                                      job.seed, job.num_samples))
        bar = tqdm(total=len(refs), desc="training runs (ray)", disable=not progress)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            bar.update(len(done))
        bar.close()
        releases = []
        for job, ref in zip(jobs, refs):
            try:
                releases.append(ray.get(ref))
            except ray.exceptions.RayTaskError as e:
                cause = getattr(e, "cause", None)
                if isinstance(cause, TrainingFailed):
                    raise _failed_in(job.index, cause) from None
                if isinstance(cause, DpauditError):
                    raise DpauditError(str(cause)) from None
                raise
        return releases
    finally:
        if started:
            ray.shutdown()
