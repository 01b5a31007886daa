"""What every reconstruction attack shares: the victim it is handed, the Reconstruction it
returns, and the registry.

A reconstruction attack pulls images out of a model trained on one side of the audit: the
synthetic set (the attack) or the real members (the control, which shows what full leakage
looks like). It is a subclass of `ReconstructionAttack` registered with
`@register_reconstruction_attack`; the audit (dpaudit/audit/reconstruction.py) turns each
registered attack into a check of the same name, runs it on both sides, matches what comes back
against the real members and the synthetic set, and reports it beside the holdout baseline.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from dpaudit.images import ImageSet
from dpaudit.metric import Metric


@dataclass
class Victim:
    """One side of the audit. `images` is the set the model learned from (the synthetic set, or
    the members for the control); `trained()` gives a fresh copy of the classifier trained on it,
    on `device`, and the indices of its training images (trained on first use); `test` is the
    real test set."""

    side: str  # "synthetic" or "members"
    images: ImageSet
    trained: Callable[[], tuple[nn.Module, torch.Tensor]]
    test: ImageSet
    num_classes: int
    seed: int
    device: torch.device = torch.device("cpu")  # where the attacks train and run their models

    @property
    def is_control(self) -> bool:
        return self.side == "members"


@dataclass
class Reconstruction:
    """What an attack got out: images (matched against the members of their class where `labels`
    are given), its own metrics (attack success, named as they appear in the result: a control
    run names them `control_*`) and details."""

    images: torch.Tensor
    labels: torch.Tensor | None
    metrics: dict[str, Metric] = field(default_factory=dict)
    details: dict = field(default_factory=dict)


class ReconstructionAttack(abc.ABC):
    """A reconstruction attack as the audit runs it: its check's title and question, its Config,
    how its reconstructions are described in metric meanings and figure captions, and
    `reconstruct(victim, config, progress)`."""

    name: ClassVar[str]
    title: ClassVar[str]
    question: ClassVar[str]
    Config: ClassVar[type]
    counts: ClassVar[str]  # what its images are called in sample sizes, e.g. "reconstructions"
    describes: ClassVar[str]  # in metric meanings, e.g. "gradient-matching reconstructions"
    control_describes: ClassVar[str]  # the same, shorter, e.g. "reconstructions"
    control_is: ClassVar[str]  # what the control run is, e.g. "classifier trained on the members"
    caption: ClassVar[str]
    control_caption: ClassVar[str]

    @abc.abstractmethod
    def reconstruct(self, victim: Victim, config: Any, progress: str) -> Reconstruction:
        """Attack the victim; the same code runs on the synthetic side and on the control."""


RECONSTRUCTION_ATTACKS: dict[str, ReconstructionAttack] = {}


def register_reconstruction_attack(cls: type[ReconstructionAttack]) -> type[ReconstructionAttack]:
    """Class decorator: register an instance of the attack under `cls.name`."""
    RECONSTRUCTION_ATTACKS[cls.name] = cls()
    return cls
