"""Training procedures the training audit can run: one of dpaudit's generators, or any command.

A trainer turns a training set (members plus the canaries whose coin came up IN) into a
release: `trainer.train(training, budget, seed, workdir, num_samples) -> Release`. Trainers
are plain frozen dataclasses, so that they travel to another process (a Ray worker) by pickling
the dataclass, never the data.

- `GeneratorTrainer(name, overrides)`: dpaudit's reference generator `name`, with `--set`
  overrides, fitted under the claimed budget; its manifest is what `dpaudit generate` writes.
- `CommandTrainer(template, data_format, timeout_s)`: a third party's script. dpaudit writes the
  training data where `{members}` says (a folder of PNGs with labels.csv, or one .npz), runs the
  command with `{members}`, `{out}`, `{epsilon}`, `{delta}`, `{seed}` and `{num}` filled in
  (each a single argument: the template is split like a shell line, never run through a shell),
  keeps its output as a log, and reads the images (and manifest.json) the script wrote to `{out}`.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet, load_images, write_npz, write_png_folder
from dpaudit.manifest import MANIFEST_NAME, Manifest, read_manifest
from dpaudit.privacy import PrivacyBudget

PLACEHOLDERS = ("members", "out", "epsilon", "delta", "seed", "num")
LOG_NAME = "log.txt"


# The end of a command's output kept as its log (the start of a long log is rarely the cause).
MAX_LOG_CHARS = 2**20


@dataclass
class Release:
    """What one training run released: the synthetic set, its manifest (or None), the
    command's output (its log) and the wall time."""

    synthetic: ImageSet
    manifest: Manifest | None
    log: str = ""
    seconds: float = 0.0


class TrainingFailed(DpauditError):
    """A training command that failed: `reason` in words and its output, which the training audit
    keeps as the run's log and names in the message."""

    def __init__(self, reason: str, log: str):
        super().__init__(reason)
        self.reason, self.log = reason, log
        self.index = 0  # the run it failed in, set by the training audit

    def __reduce__(self):  # travels back from a Ray worker whole
        return TrainingFailed, (self.reason, self.log)


@dataclass(frozen=True)
class GeneratorTrainer:
    """dpaudit's generator `name` with `key=value` overrides, on `device`."""

    name: str
    overrides: tuple[str, ...] = ()
    device: str = "cpu"

    def describe(self) -> str:
        return " ".join([f"dpaudit generator {self.name}", *(f"--set {o}" for o in self.overrides)])

    def check(self) -> None:
        """Refuse an unknown generator or a bad override before any run starts."""
        from dpaudit.generators import get_generator

        get_generator(self.name).from_options(self.overrides)

    def train(self, training: ImageSet, budget: PrivacyBudget, seed: int, workdir: Path, num_samples: int) -> Release:
        from dpaudit.generators import get_generator
        from dpaudit.generators.release import release_manifest

        start = time.perf_counter()
        generator = get_generator(self.name).from_options(self.overrides, device=self.device)
        generator.fit(training, budget, seed)
        synthetic = generator.sample(num_samples, "balanced", seed=seed)
        return Release(synthetic, release_manifest(generator, budget), "", time.perf_counter() - start)


@dataclass(frozen=True)
class CommandTrainer:
    """A command line (see the module docstring); `data_format` png or npz; `timeout_s` per run."""

    template: str
    data_format: str = "png"
    timeout_s: float = 3600.0

    def describe(self) -> str:
        return self.template

    def check(self) -> None:
        """Refuse a template that cannot be split, names an unknown placeholder or lacks {members}/{out}."""
        try:
            words = shlex.split(self.template)
        except ValueError as e:
            raise DpauditError(f"--command {self.template!r}: cannot be split into arguments ({e}).") from None
        if not words:
            raise DpauditError("--command is empty.")
        for word in words:
            try:
                word.format(**{p: "" for p in PLACEHOLDERS})
            except (KeyError, IndexError, ValueError) as e:
                raise DpauditError(
                    f"--command: {word!r} names an unknown placeholder ({e}); available: "
                    + ", ".join("{" + p + "}" for p in PLACEHOLDERS) + " (write {{ and }} for braces)."
                ) from None
        for required in ("members", "out"):
            if "{" + required + "}" not in self.template:
                raise DpauditError(f"--command must pass {{{required}}} to the training script.")
        if self.data_format not in ("png", "npz"):
            raise DpauditError(f"--data-format: expected png or npz, got {self.data_format!r}.")

    def train(self, training: ImageSet, budget: PrivacyBudget, seed: int, workdir: Path, num_samples: int) -> Release:
        workdir = Path(workdir)
        if self.data_format == "npz":
            data = write_npz(training, workdir / "members.npz")
        else:
            data = write_png_folder(training, workdir / "members", labels_csv=True)
        out = workdir / "out"
        out.mkdir(parents=True, exist_ok=True)
        values = {"members": str(data), "out": str(out), "epsilon": repr(budget.epsilon), "delta": repr(budget.delta),
                  "seed": str(seed), "num": str(num_samples)}
        argv = [word.format(**values) for word in shlex.split(self.template)]
        log_path = workdir / LOG_NAME
        start = time.perf_counter()
        with log_path.open("w") as stream:
            try:
                status = subprocess.run(argv, stdout=stream, stderr=subprocess.STDOUT, cwd=workdir,
                                        timeout=self.timeout_s).returncode
            except FileNotFoundError:
                raise DpauditError(f"--command: no program {argv[0]!r} to run.") from None
            except subprocess.TimeoutExpired:
                status = None
        seconds = time.perf_counter() - start
        log = log_path.read_text(errors="replace")[-MAX_LOG_CHARS:]
        if status is None:
            raise TrainingFailed(f"the training command ran past its timeout of {self.timeout_s:g} s and was stopped", log)
        if status != 0:
            raise TrainingFailed(f"the training command exited with status {status}", log)
        try:
            synthetic = read_release(out, training)
            manifest = read_manifest(out) if (out / MANIFEST_NAME).is_file() else None
        except DpauditError as e:
            raise TrainingFailed(str(e).rstrip("."), log) from None
        return Release(synthetic, manifest, log, seconds)


def read_release(out: Path, training: ImageSet) -> ImageSet:
    """The images a training command wrote to `out` (PNGs, or one .npz), checked against the
    training data's shape; DpauditError otherwise."""
    npz = sorted(out.glob("*.npz"))
    if not any(p.name != MANIFEST_NAME for p in out.iterdir()):
        raise DpauditError("the training command wrote no images to its {out} folder")
    try:
        synthetic = load_images(npz[0] if len(npz) == 1 else out, name="release", num_classes=training.num_classes)
    except DpauditError as e:
        raise DpauditError(f"the training command's output is unreadable ({str(e).rstrip('.')})") from None
    if len(synthetic) == 0:
        raise DpauditError("the training command wrote no images to its {out} folder")
    if synthetic.shape != training.shape:
        raise DpauditError(
            f"the training command wrote images of shape {tuple(synthetic.shape)} to its {{out}} folder, but it was given "
            f"{tuple(training.shape)}"
        )
    return synthetic
