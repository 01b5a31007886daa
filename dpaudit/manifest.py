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

Three fields of `details` declare the mechanism, for the privacy_claim check
(dpaudit/audit/privacy_claim.py) to re-account: `history` ([[noise_multiplier, sample_rate,
steps], ...], composed; the noise multiplier counts against the sensitivity under the declared
adjacency), `adjacency` ("add-remove" or "replace-one") and `mechanism` (one sentence).

`read_manifest` checks every field's type (MANIFEST_SCHEMA; the same schema checks the copy in
result.json) and refuses a file over MAX_MANIFEST_BYTES or nested deeper than MAX_DEPTH before
parsing it, with one sentence naming the file and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from dpaudit.schema import (
    INTEGER,
    NAME,
    OBJECT,
    STRING,
    At,
    DictOf,
    Nullable,
    Record,
    between,
    check_values,
    describe,
    one_of,
    parse_json,
    read_text,
)
from dpaudit.files import staged

MANIFEST_NAME = "manifest.json"
SCHEMA = "dpaudit.manifest/1"
# Largest manifest.json read: a written one is about 2 KB (its details hold the generator's
# config and privacy accounting); 1 MiB leaves room for long hand-written details.
MAX_MANIFEST_BYTES = 2**20
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
    def new(cls, generator: str, **fields) -> Manifest:
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
        """Write manifest.json into `folder`, atomically (a temporary file, then a rename)."""
        path = Path(folder) / MANIFEST_NAME
        with staged(path) as temporary:
            temporary.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


# Every field's type; unknown fields are kept (read_manifest moves them to details).
MANIFEST_SCHEMA = Record(
    {
        "schema": one_of(SCHEMA),
        "generator": NAME,
        "epsilon": Nullable(between(0, math.inf)),
        "delta": Nullable(between(0, 1)),
        "dataset": Nullable(STRING),
        "split_id": Nullable(STRING),
        "seed": Nullable(INTEGER),
        "versions": Nullable(DictOf(STRING)),
        "created": Nullable(STRING),
        "details": Nullable(OBJECT),
    },
    required=("generator",),
    keep_unknown=True,
)


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
    at = At(path)
    data = parse_json(read_text(path, max_bytes=MAX_MANIFEST_BYTES, what="manifest"), path)
    if not isinstance(data, dict):
        raise at.error(f"the manifest must be a JSON object, got {describe(data)}")
    # NaN and Infinity pass in the free-form details: Manifest.write writes an infinite epsilon
    # of a non-private run's accounting as Infinity there. The typed fields refuse them.
    check_values(data, at, finite=False)
    data = MANIFEST_SCHEMA(data, at)
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
