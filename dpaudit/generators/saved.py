"""A fitted generator saved to one file and loaded back, to sample again (another number, other
labels, another seed) without training again.

The file is written with `torch.save` and holds only tensors, numbers, strings, lists and dicts,
so it is read back with `torch.load(weights_only=True)`: a file from elsewhere is never
unpickled. It holds what sampling and the manifest need: the generator's name and
hyper-parameters, the data's shape and classes, the DP-released class counts, the privacy report
of the run that trained it, what it was trained on (a `TrainingRun`) and the released state
(`Generator.released_state`: weights and released statistics). All of it is post-processing of
the run's DP releases, so the file is covered by the run's guarantee, as its samples are; the
training seed of a private run is left out (with it, the noise could be recomputed).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import torch

from dpaudit import __version__
from dpaudit.errors import DpauditError
from dpaudit.files import staged
from dpaudit.generators.base import Generator, PrivacyReport, apply_overrides, get_generator
from dpaudit.generators.release import TrainingRun
from dpaudit.privacy import PrivacyBudget

FORMAT = "dpaudit.generator/1"
KEYS = ("format", "dpaudit", "generator", "config", "shape", "num_classes", "class_counts", "report", "run", "state")


def save_generator(generator: Generator, run: TrainingRun, path: str | Path) -> Path:
    """Write a fitted generator and the run that trained it to `path` (atomically: a reader never
    sees half a file). Returns the path."""
    report = generator.report  # refuses an unfitted generator
    run_fields = dataclasses.asdict(run)
    run_fields["budget"] = [run.budget.epsilon, run.budget.delta]
    run_fields["seed"] = run.public_seed
    payload = {
        "format": FORMAT,
        "dpaudit": __version__,
        "generator": generator.name,
        # JSON strings: hyper-parameters and reports hold inf and nested lists that JSON keeps exactly.
        "config": json.dumps(dataclasses.asdict(generator.config)),
        "shape": list(generator.shape),
        "num_classes": generator.num_classes,
        "class_counts": generator.class_counts,
        "report": json.dumps(dataclasses.asdict(report)),
        "run": json.dumps(run_fields),
        "state": generator.released_state(),
    }
    path = Path(path)
    with staged(path) as temporary:
        torch.save(payload, temporary)
    return path


def load_generator(path: str | Path, *, device: str = "cpu", progress: bool = False) -> tuple[Generator, TrainingRun]:
    """A generator saved by `save_generator`, ready to sample, and the run that trained it.
    Anything else (another file, a damaged one, one whose networks do not fit its
    hyper-parameters) is a DpauditError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DpauditError(f"{path}: no such file.")
    try:
        saved = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises pickle, zip and runtime errors on a damaged or foreign file
        raise DpauditError(f"{path}: not a saved dpaudit generator ({_first_line(e)}).") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or set(saved) != set(KEYS):
        raise DpauditError(f"{path}: not a saved dpaudit generator (expected format {FORMAT}).")
    try:
        cls = get_generator(saved["generator"])
        config = _config_from_json(cls, saved["config"])
        report = _report_from_json(saved["report"])
        run = _run_from_json(saved["run"])
        generator = cls(config, device=device, progress=progress)
        counts = saved["class_counts"]
        if counts is not None and not isinstance(counts, torch.Tensor):
            raise ValueError("class_counts is not a tensor")
        generator.restore_fitted(tuple(int(v) for v in saved["shape"]), int(saved["num_classes"]), counts, report,
                                 saved["state"])
    except DpauditError as e:
        raise DpauditError(f"{path}: {e}") from None
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as e:
        # load_state_dict raises RuntimeError on networks that do not match the hyper-parameters.
        raise DpauditError(f"{path}: the saved generator does not load ({_first_line(e)}); "
                           f"it was written by dpaudit {saved.get('dpaudit')}.") from None
    return generator, run


def _first_line(error: Exception) -> str:
    """The error's first sentence (torch's own messages go on with advice that does not apply)."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line.split(". ")[0].rstrip(".:")


def _config_from_json(cls: type[Generator], text: str):
    """The saved hyper-parameters, each checked against its declared type by the parser of
    `--set` (written back as the text `--set` takes)."""
    values = json.loads(text)
    known = {f.name for f in dataclasses.fields(cls.Config)}
    if not isinstance(values, dict) or set(values) != known:
        raise ValueError(f"hyper-parameters {sorted(set(values) ^ known) if isinstance(values, dict) else values} "
                         f"differ from {cls.name}'s")
    hints = typing.get_type_hints(cls.Config)

    def as_text(key, value):
        if typing.get_origin(hints[key]) is tuple:
            return ",".join(map(str, value))
        return str(value).lower() if isinstance(value, bool) else str(value)

    try:
        return apply_overrides(cls.Config(), {key: as_text(key, value) for key, value in values.items()})
    except DpauditError as e:
        raise ValueError(f"a saved hyper-parameter does not parse: {e}") from None


def _report_from_json(text: str) -> PrivacyReport:
    fields = json.loads(text)
    fields["history"] = [(float(sigma), float(rate), int(steps)) for sigma, rate, steps in fields["history"]]
    report = PrivacyReport(**fields)
    if not (isinstance(report.epsilon, (int, float)) and report.epsilon > 0 and 0 < report.delta < 1):
        raise ValueError("a privacy report without a valid epsilon and delta")
    return report


def _run_from_json(text: str) -> TrainingRun:
    fields = json.loads(text)
    epsilon, delta = fields.pop("budget")
    seed = fields.pop("seed")
    budget = PrivacyBudget(float(epsilon), float(delta))
    if seed is None and not budget.is_private:
        raise ValueError("a non-private run without its seed")
    return TrainingRun(budget, seed=None if seed is None else int(seed), **fields)
