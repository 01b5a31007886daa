"""The Generator protocol, the registry of reference generators, and what they share:
hyper-parameter overrides (`--set key=value`), class-label allocation, the privacy report
and checkpoints that let a long run resume after an interruption.

Adding a generator is one module and one line: subclass `Generator`, decorate the class with
`@register`, and import the module in `dpaudit/generators/__init__.py`.

A subclass sets `name` (the CLI name), `Config` (a dataclass of hyper-parameters with
defaults), `test_overrides` (see `Generator`) and implements four methods:

- `train(members, budget, seed) -> PrivacyReport`: everything that touches the private data,
  with the accounting of what was really done. It may save and restore its state through
  `self.checkpoint` (a `Checkpointer`); the base `fit` binds the checkpoint to the run first.
- `generate(labels, seed) -> Tensor`: images for the given labels (float, N x C x H x W).
- `released_state() -> dict` and `load_released_state(state)`: what `generate` needs once
  trained (weights, released statistics), and building the sampling networks from it, so that a
  fitted generator can be saved and sampled again without training (dpaudit/generators/saved.py).

`fit` and `sample` in this base class do the validation, timing and label bookkeeping.
"""

from __future__ import annotations

import abc
import math
import dataclasses
import hashlib
import json
import os
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Sequence, TypeVar

import torch

from dpaudit import distributed
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet
from dpaudit.nets import resolve_device
from dpaudit.privacy import PrivacyBudget, composed_epsilon

# ---------------------------------------------------------------- privacy report


@dataclass
class PrivacyReport:
    """What a generator's training cost in privacy, as accounted.

    `history` is the accountant's history: one (noise multiplier, sampling rate, steps) entry
    per kind of Gaussian release, exactly what opacus' accountants take. `epsilon` is the
    accountant's epsilon for that history at `delta` (inf for a non-private run)."""

    epsilon: float
    delta: float
    accountant: str
    history: list[tuple[float, float, int]]
    mechanism: str
    adjacency: str
    wall_time_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @classmethod
    def of_history(cls, history: list[tuple[float, float, int]], budget: PrivacyBudget, accountant: str,
                   mechanism: str, extra: dict | None = None) -> "PrivacyReport":
        """The report of a run whose releases are `history`, all under add/remove adjacency of one
        record: epsilon from the accountant for that history (inf for a non-private run)."""
        return cls(
            epsilon=composed_epsilon(history, budget.delta, accountant) if budget.is_private else math.inf,
            delta=budget.delta, accountant=accountant, history=history, mechanism=mechanism,
            adjacency="add-remove", extra=extra or {},
        )

    def to_dict(self) -> dict:
        """JSON-ready: epsilon, delta, sigma, sample_rate, steps (of the main release, the first
        history entry), the full history, accountant, mechanism, adjacency, wall time, extras."""
        sigma, rate, steps = self.history[0] if self.history else (0.0, 0.0, 0)
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "sigma": sigma,
            "sample_rate": rate,
            "steps": steps,
            "history": [list(h) for h in self.history],
            "accountant": self.accountant,
            "mechanism": self.mechanism,
            "adjacency": self.adjacency,
            "wall_time_s": round(self.wall_time_s, 3),
            **self.extra,
        }


# ---------------------------------------------------------------- hyper-parameters


def _parse_value(text: str, kind: Any, option: str):
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        if text not in choices:
            raise DpauditError(f"{option}: expected one of {', '.join(map(str, choices))}, got {text!r}.")
        return text
    if origin is tuple:
        item_kind = typing.get_args(kind)[0]
        return tuple(_parse_value(t.strip(), item_kind, option) for t in text.split(",") if t.strip())
    if kind is bool:
        lowered = text.lower()
        if lowered in ("true", "yes", "1", "on"):
            return True
        if lowered in ("false", "no", "0", "off"):
            return False
        raise DpauditError(f"{option}: expected true or false, got {text!r}.")
    if kind in (int, float, str):
        try:
            return kind(text)
        except ValueError:
            raise DpauditError(f"{option}: expected {kind.__name__}, got {text!r}.") from None
    raise DpauditError(f"{option}: the option's type {kind} cannot be set from the command line.")


def apply_overrides(config: Any, overrides: Sequence[str] | dict[str, str]) -> Any:
    """A copy of a hyper-parameter dataclass with `key=value` overrides applied, each value
    parsed to the field's declared type (int, float, bool, str, Literal, tuple[x, ...] as
    comma-separated). An unknown key or a bad value raises DpauditError."""
    if isinstance(overrides, dict):
        pairs = list(overrides.items())
    else:
        pairs = []
        for item in overrides:
            if "=" not in item:
                raise DpauditError(f"--set {item!r}: expected key=value.")
            key, value = item.split("=", 1)
            pairs.append((key.strip(), value.strip()))
    hints = typing.get_type_hints(type(config))
    known = [f.name for f in dataclasses.fields(config)]
    changes = {}
    for key, value in pairs:
        if key not in known:
            raise DpauditError(
                f"--set {key}: unknown option for {type(config).__name__}; valid keys are {', '.join(known)}."
            )
        changes[key] = _parse_value(str(value), hints[key], f"--set {key}")
    return dataclasses.replace(config, **changes)


# A hyper-parameter that must be positive: `batch_size: Positive[int] = 64`. `Generator.fit`
# refuses a config where one is not, naming the `--set` key, before any work.
_T = TypeVar("_T")
POSITIVE = "positive"
Positive = Annotated[_T, POSITIVE]


def check_positive(config: Any) -> None:
    """A DpauditError naming the first field declared Positive whose value is not positive."""
    for key, hint in typing.get_type_hints(type(config), include_extras=True).items():
        if POSITIVE in getattr(hint, "__metadata__", ()) and not getattr(config, key) > 0:
            raise DpauditError(f"--set {key}: must be positive, got {getattr(config, key)}.")


# ---------------------------------------------------------------- labels


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """n labels, classes as equal as possible (the first n % k classes get one more)."""
    return proportional_labels(n, torch.ones(num_classes))


def proportional_labels(n: int, weights: torch.Tensor) -> torch.Tensor:
    """n labels allocated in proportion to non-negative `weights` by the largest-remainder rule
    (deterministic, sums to n exactly), sorted by class."""
    w = torch.as_tensor(weights, dtype=torch.float64).clamp(min=0)
    if not w.sum() > 0:
        w = torch.ones_like(w)
    quota = w / w.sum() * n
    counts = quota.floor().long()
    remainder = n - int(counts.sum())
    if remainder:
        order = torch.argsort(quota - counts, descending=True, stable=True)
        counts[order[:remainder]] += 1
    return torch.repeat_interleave(torch.arange(len(w)), counts)


# ---------------------------------------------------------------- checkpoints


class Checkpointer:
    """Saves a training run's state now and then, and hands it back to the same run after an
    interruption. The state is a dict of tensors, numbers, strings, lists and dicts (read back
    with `torch.load(weights_only=True)`); it must hold everything the run needs to continue
    exactly as if uninterrupted (weights, optimiser state, random generator state, step, and
    any privacy ledger so that the steps taken before the interruption stay counted).

    A checkpoint is tied to its run by a key (generator, hyper-parameters, data fingerprint,
    budget, seed): a checkpoint of another run is refused, never silently reused. It can hold
    state derived from the private data that is not itself differentially private; keep the
    folder as private as the data. `folder=None` disables checkpoints."""

    FILE = "state.pt"

    def __init__(self, folder: str | Path | None, *, every_seconds: float = 60.0, every_steps: int | None = None):
        self.folder = None if folder is None else Path(folder)
        self.every_seconds = every_seconds
        self.every_steps = every_steps
        self.key: str | None = None
        self.elapsed_before = 0.0  # wall time spent by earlier, interrupted sessions
        self._session_start = time.perf_counter()
        self._last_save = self._session_start

    @property
    def path(self) -> Path | None:
        return None if self.folder is None else self.folder / self.FILE

    def bind(self, run: dict) -> None:
        """Tie the checkpoint to a run, described by a JSON-able dict."""
        self.key = hashlib.sha256(json.dumps(run, sort_keys=True, default=str).encode()).hexdigest()
        self._session_start = self._last_save = time.perf_counter()

    def elapsed(self) -> float:
        """Wall time of this run so far, including interrupted sessions."""
        return self.elapsed_before + time.perf_counter() - self._session_start

    def load(self) -> dict | None:
        """The saved state of this run, or None when there is none."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, weights_only=True)
        except Exception as e:  # torch raises pickle, zip and runtime errors on a damaged file
            raise DpauditError(f"{self.path}: cannot read the checkpoint ({e}); delete it to start afresh.") from None
        if saved.get("key") != self.key:
            raise DpauditError(
                f"{self.path}: the checkpoint belongs to another run (other data, options or seed); "
                "delete it or choose another checkpoint folder."
            )
        self.elapsed_before = float(saved["elapsed_s"])
        return saved["state"]

    def due(self, step: int) -> bool:
        """Whether a save is due after `step` steps (by step count or by time)."""
        if self.path is None:
            return False
        if self.every_steps is not None:
            return step % self.every_steps == 0
        return time.perf_counter() - self._last_save >= self.every_seconds

    def save(self, state: dict) -> None:
        """Write the state atomically (a temporary file, then a rename); under torchrun only rank 0
        writes (every process holds the same state)."""
        if self.path is None or not distributed.is_main():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({"key": self.key, "elapsed_s": self.elapsed(), "state": state}, tmp)
        os.replace(tmp, self.path)
        self._last_save = time.perf_counter()

    def maybe_save(self, step: int, state_fn: Callable[[], dict]) -> None:
        """Save `state_fn()` when a save is due after `step` steps."""
        if self.due(step):
            self.save(state_fn())

    def clear(self) -> None:
        """Remove the checkpoint once the run has finished (rank 0's job under torchrun)."""
        if self.path is not None and distributed.is_main() and self.path.is_file():
            self.path.unlink()
            if not any(self.folder.iterdir()):
                self.folder.rmdir()


# ---------------------------------------------------------------- the protocol


class Generator(abc.ABC):
    """A reference generator: `fit(members, budget, seed)` on labelled private images, then
    `sample(n, labels)`; `privacy_report()` says what the training cost, as accounted.

    `test_overrides` are `key=value` changes of `Config` (as `--set` takes them): the smallest
    settings that still exercise every stage; used by the contract tests
    (tests/generators/test_contract.py). `data_parallel` says whether its private training runs
    data-parallel under torchrun (its DP-SGD stages use dp_training.DPSGD)."""

    name: ClassVar[str]
    Config: ClassVar[type]
    test_overrides: ClassVar[dict[str, str]]
    data_parallel: ClassVar[bool] = False

    def __init__(self, config: Any = None, *, device: str = "cpu", checkpoint: Checkpointer | None = None, progress: bool = False):
        self.config = self.Config() if config is None else config
        self.device = resolve_device(device)
        self.checkpoint = checkpoint or Checkpointer(None)
        self.progress = progress
        self.shape: tuple[int, int, int] | None = None
        self.num_classes: int | None = None
        # Class counts released with differential privacy (part of the accounted cost), if any.
        self.class_counts: torch.Tensor | None = None
        self._report: PrivacyReport | None = None

    @classmethod
    def from_options(cls, overrides: Sequence[str] | dict = (), **kwargs) -> "Generator":
        """A generator whose default hyper-parameters are changed by `key=value` overrides."""
        return cls(apply_overrides(cls.Config(), overrides), **kwargs)

    def fit(self, members: ImageSet, budget: PrivacyBudget, seed: int = 0) -> "Generator":
        """Train on the members under the budget. Deterministic for a seed on one machine."""
        if not members.has_labels:
            raise DpauditError(f"{members.source or members.name}: the generators are class-conditional and need labelled members.")
        if len(members) == 0:
            raise DpauditError(f"{members.source or members.name}: no member images to train on.")
        check_positive(self.config)
        self.shape, self.num_classes = members.shape, int(members.num_classes)
        self.checkpoint.bind(
            {
                "generator": self.name,
                "config": dataclasses.asdict(self.config),
                "members": members.fingerprint(),
                "budget": [budget.epsilon, budget.delta],
                "seed": seed,
            }
        )
        report = self.train(members, budget, seed)
        report.wall_time_s = self.checkpoint.elapsed()
        if budget.is_private and report.epsilon > budget.epsilon * (1 + 1e-9):
            raise RuntimeError(f"{self.name} spent epsilon {report.epsilon} > budget {budget.epsilon}")
        self._report = report
        self.checkpoint.clear()
        return self

    @abc.abstractmethod
    def train(self, members: ImageSet, budget: PrivacyBudget, seed: int) -> PrivacyReport:
        """Everything that touches the private data; returns the accounting of what was done."""

    @abc.abstractmethod
    def generate(self, labels: torch.Tensor, seed: int) -> torch.Tensor:
        """Images (float32 N x C x H x W, on any device) for the given int64 labels (on the CPU)."""

    @abc.abstractmethod
    def released_state(self) -> dict:
        """What `generate` needs of the trained generator and nothing more (tensors, numbers,
        lists): post-processing of the run's DP releases, never the members or the seed."""

    @abc.abstractmethod
    def load_released_state(self, state: dict) -> None:
        """Build the sampling networks for `shape`, `num_classes` and `config`, and load
        `released_state()`'s output into them."""

    def restore_fitted(self, shape: tuple[int, int, int], num_classes: int, class_counts: torch.Tensor | None,
                       report: PrivacyReport, state: dict) -> "Generator":
        """This generator as it was once fitted (its data shape, classes, released class counts,
        privacy report and released state), ready to sample without training."""
        self.shape, self.num_classes, self.class_counts = tuple(shape), int(num_classes), class_counts
        self.load_released_state(state)
        self._report = report
        return self

    def sample_labels(self, n: int, mode: str = "balanced") -> torch.Tensor:
        """n labels: "balanced" over the classes, or "proportional" to the DP-released counts."""
        if mode == "balanced":
            return balanced_labels(n, self.num_classes)
        if mode == "proportional":
            if self.class_counts is None:
                raise DpauditError(f"--labels proportional: {self.name} released no class counts; use balanced.")
            return proportional_labels(n, self.class_counts)
        raise DpauditError(f"--labels: expected balanced or proportional, got {mode!r}.")

    def sample(self, n: int, labels: torch.Tensor | str | None = None, *, seed: int = 0) -> ImageSet:
        """n synthetic images. `labels`: a tensor of n class labels, or "balanced" (the
        default) or "proportional" (to the DP-released class counts)."""
        if self._report is None:
            raise DpauditError(f"{self.name}: fit the generator before sampling.")
        if n <= 0:
            raise DpauditError(f"--num must be positive, got {n}.")
        if labels is None or isinstance(labels, str):
            labels = self.sample_labels(n, labels or "balanced")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (n,) or labels.min() < 0 or labels.max() >= self.num_classes:
            raise DpauditError(f"labels: expected {n} class labels in 0..{self.num_classes - 1}.")
        x = self.generate(labels, seed).cpu().float().clamp(0, 1).contiguous()
        return ImageSet(x, labels, self.num_classes, f"{self.name}-synthetic", self.name)

    @property
    def report(self) -> PrivacyReport:
        """The fitted run's PrivacyReport (a DpauditError before fitting)."""
        if self._report is None:
            raise DpauditError(f"{self.name}: fit the generator before asking for its privacy report.")
        return self._report

    def privacy_report(self) -> dict:
        """epsilon (the accountant's, for the steps really taken), delta, sigma, sample_rate,
        steps, history, accountant, mechanism, adjacency, wall_time_s and method extras."""
        return self.report.to_dict()


GENERATORS: dict[str, type[Generator]] = {}


def register(cls: type[Generator]) -> type[Generator]:
    """Class decorator: add a Generator subclass to GENERATORS under its CLI name."""
    GENERATORS[cls.name] = cls
    return cls


def get_generator(name: str) -> type[Generator]:
    """The Generator class registered under a CLI name, or a DpauditError listing the names."""
    if name not in GENERATORS:
        raise DpauditError(f"unknown generator {name!r}; available: {', '.join(sorted(GENERATORS))}.")
    return GENERATORS[name]
