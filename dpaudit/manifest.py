"""manifest.json: what a synthetic set says about itself.

`dpaudit generate` writes one beside the images; a third party can write it by hand.
Only `generator` is required; `evaluate` reports which of the other fields were missing.

    {
      "schema": "dpaudit.manifest/1",
      "generator": "dp-merf",             # name of the method or product
      "epsilon": 10.0, "delta": 1e-05,    # the claimed privacy guarantee (null if none)
      "dataset": "mnist",                 # built-in dataset or a free-text name
      "split_id": "mnist:s0:m50000:h10000:...",  # the exact member split it was trained on
      "seed": 0,
      "versions": {"torch": "2.14.1", ...},
      "created": "2026-11-23T14:00:00+00:00",
      "details": {...}                    # free-form: sigma, sampling rate, steps, time, ...
    }
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from dpaudit.errors import DpauditError

MANIFEST_NAME = "manifest.json"
SCHEMA = "dpaudit.manifest/1"
OPTIONAL_FIELDS = ("epsilon", "delta", "dataset", "split_id", "seed", "versions", "created")
VERSIONED_PACKAGES = ("dpaudit", "torch", "torchvision", "opacus", "torchmetrics", "piq", "numpy")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour a result depends on."""
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


@dataclass
class Manifest:
    """The provenance of a synthetic set. `missing` lists the optional fields it lacked."""

    generator: str
    epsilon: float | None = None
    delta: float | None = None
    dataset: str | None = None
    split_id: str | None = None
    seed: int | None = None
    versions: dict[str, str] = field(default_factory=dict)
    created: str | None = None
    details: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @classmethod
    def new(cls, generator: str, **fields) -> "Manifest":
        """A manifest stamped with the current library versions and time."""
        return cls(
            generator,
            versions=library_versions(),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **fields,
        )

    def to_dict(self) -> dict:
        data = {"schema": SCHEMA, **asdict(self)}
        data.pop("missing")
        return data

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _check_number(path: Path, data: dict, key: str, low: float, high: float) -> None:
    value = data.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DpauditError(f"{path}: {key!r} must be a finite number, got {value!r}.")
    if not low <= value <= high:
        raise DpauditError(f"{path}: {key!r} = {value!r} is outside [{low:g}, {high:g}].")


def read_manifest(folder_or_file: str | Path) -> Manifest | None:
    """Read and validate `manifest.json` in a synthetic-set folder (or the file itself).
    Returns None when there is none."""
    path = Path(folder_or_file)
    if path.is_dir():
        path = path / MANIFEST_NAME
    elif path.suffix != ".json":
        path = path.parent / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DpauditError(f"{path}: not valid JSON ({e}).") from None
    if not isinstance(data, dict):
        raise DpauditError(f"{path}: the manifest must be a JSON object.")
    if data.get("schema", SCHEMA) != SCHEMA:
        raise DpauditError(f"{path}: unknown manifest schema {data['schema']!r}; expected {SCHEMA!r}.")
    if not isinstance(data.get("generator"), str) or not data["generator"]:
        raise DpauditError(f"{path}: the manifest needs a 'generator' name.")
    _check_number(path, data, "epsilon", 0, math.inf)
    _check_number(path, data, "delta", 0, 1)
    for key in ("dataset", "split_id", "created"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise DpauditError(f"{path}: {key!r} must be a string.")
    if data.get("seed") is not None and (isinstance(data["seed"], bool) or not isinstance(data["seed"], int)):
        raise DpauditError(f"{path}: 'seed' must be an integer.")
    for key in ("versions", "details"):
        if not isinstance(data.get(key, {}), dict):
            raise DpauditError(f"{path}: {key!r} must be an object.")
    known = {"schema", "generator", "details", *OPTIONAL_FIELDS}
    unknown = sorted(set(data) - known)
    details = dict(data.get("details") or {})
    if unknown:
        details["unknown_fields"] = {k: data[k] for k in unknown}
    return Manifest(
        generator=data["generator"],
        epsilon=data.get("epsilon"),
        delta=data.get("delta"),
        dataset=data.get("dataset"),
        split_id=data.get("split_id"),
        seed=data.get("seed"),
        versions=data.get("versions") or {},
        created=data.get("created"),
        details=details,
        missing=[k for k in OPTIONAL_FIELDS if data.get(k) is None],
    )
