"""Data-parallel training across processes (`torchrun --nproc_per_node N -m dpaudit generate ...`):
the process group, this process's rank, and what only the first process does.

torchrun starts N copies of the command with RANK, WORLD_SIZE and MASTER_ADDR set; the first
call of `init_from_environment` joins them into one process group (NCCL on GPUs, gloo on
CPUs). Every process loads the members and trains the same model on its share of each batch
(dpaudit/generators/dp_training.py); only rank 0 adds the DP noise, writes checkpoints and
writes the samples. Without torchrun nothing here does anything: one process is rank 0 of 1.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(this process's rank, number of processes): (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process is the one that writes (rank 0)."""
    return world()[0] == 0


def init_from_environment(device: str = "cpu") -> int:
    """Join the process group torchrun described in the environment (once); the world size."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return world()[1]


def from_main(value):
    """`value` as rank 0 has it, on every process (e.g. a secret seed drawn by rank 0)."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
