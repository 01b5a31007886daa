"""AuditResult and its JSON schema: what every check returns, and all the report and gate read.

Schema `dpaudit.result/1` (a change that breaks readers bumps the number):

    {
      "schema": "dpaudit.result/1",
      "dpaudit_version": "0.1.0", "created": "...", "seed": 0, "profile": "quick",
      "settings": {the whole profile: every check's and attack's settings, as used},
      "versions": {"torch": "...", ...},
      "synthetic": {ImageSet summary: name, source, count, shape, num_classes, fingerprint},
      "reference": {"dataset": ..., "split_id": ..., "members": {...}, "holdout": {...}, "test": {...}},
      "manifest": {manifest fields} or null, "manifest_missing": [fields it lacked],
      "feature_extractor": {"name": ..., "sha256": ..., "dim": ...},
      "checks": {
        "<check>": {
          "check": "<check>", "seconds": 1.2,
          "title": "...", "question": "...", "headlines": ["<metric>", ...],
          "metrics": {"<metric>": {value, direction, range, meaning, ci, baseline, n}},
          "details": {free-form JSON: per-class values, ROC curves, histograms},
          "figures": {"<name>": {"caption": ..., "png": base64 PNG}}
        }
      },
      "warnings": ["..."]
    }

A metric is addressed by the path `<check>.<metric>` (its value) or `<check>.<metric>.<field>`
(e.g. `membership.auc.ci_high`); this is what gate policies name.

`load_result` checks the type of every field above (`RESULT_SCHEMA`) and refuses a file over
MAX_RESULT_BYTES or nested deeper than MAX_DEPTH before parsing it, with one sentence naming the
file and the field. Unknown fields are ignored (a newer dpaudit may add some); the fields added
after the first version (settings, title, question, headlines, nearest_neighbors) may be missing. `save` writes
through a temporary file and a rename, so a failed write never destroys the previous file.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dpaudit.schema import (
    BOOLEAN,
    COUNT,
    INTEGER,
    NUMBER,
    OBJECT,
    STRING,
    At,
    Check,
    DictOf,
    ListOf,
    Nullable,
    Pair,
    Record,
    Scalar,
    check_values,
    describe,
    one_of,
    parse_json,
    read_text,
)
from dpaudit.errors import DpauditError
from dpaudit.files import staged
from dpaudit.manifest import MANIFEST_SCHEMA
from dpaudit.metric import DIRECTIONS, Metric

SCHEMA = "dpaudit.result/1"
# Largest result.json read. The demo's is 160 KB and a paper-profile MNIST audit (longer ROC
# curves, larger image grids) a few MB; 64 MiB is that many times over, while parsing a hostile
# file of that size (64 MiB of `{},` becomes 22 million dicts) stays under 2 GB of memory.
MAX_RESULT_BYTES = 64 * 2**20
__all__ = ["DIRECTIONS", "MAX_RESULT_BYTES", "RESULT_SCHEMA", "SCHEMA", "AuditResult", "CheckResult", "Metric",
           "encode_png", "load_result"]

# The schema of a result.json, field by field (dpaudit/audit/schema.py has the checkers).
METRIC_SCHEMA = Record(
    {
        "value": Nullable(NUMBER),  # null: not measured (NaN)
        "direction": one_of(*DIRECTIONS),
        "meaning": STRING,
        "range": Nullable(Pair()),  # a null bound: infinite
        "ci": Nullable(Pair()),
        "baseline": Nullable(NUMBER),
        "target": Nullable(NUMBER),
        "n": DictOf(COUNT),
        "invalid": Nullable(STRING),  # why the value cannot be trusted
    },
    required=("value", "direction", "meaning"),
)


class _AttackTable(Check):
    """`details.attacks` of a check: free-form, but the report tabulates every field that is a
    number in one attack across all of them, so there it must be a number (or null) in each."""

    _cell = Nullable(Scalar("a finite number (as in the other attacks)", NUMBER.shape_ok))

    def inner_check(self, value, at: At):
        if isinstance(value, dict):
            attacks = {name: a for name, a in value.items() if isinstance(a, dict)}
            numeric = {k for a in attacks.values() for k, v in a.items() if NUMBER.shape_ok(v)}
            for name, attack in attacks.items():
                for key in numeric & attack.keys():
                    self._cell(attack[key], at / name / key)
        return value


# What the report reads of a check's free-form details, outside the plots that note a failure.
DETAILS_SCHEMA = Record(
    {"attacks": _AttackTable(), "claimed_epsilon": Nullable(NUMBER), "claim_violated": BOOLEAN,
     "claim_warning": Nullable(STRING)},
    keep_unknown=True,
)
FIGURE_SCHEMA = Record({"caption": STRING, "png": STRING}, required=("caption", "png"), keep_unknown=True)
CHECK_SCHEMA = Record(
    {
        "check": STRING,
        "metrics": DictOf(METRIC_SCHEMA),
        "details": DETAILS_SCHEMA,
        "figures": DictOf(FIGURE_SCHEMA),
        "seconds": NUMBER,
        "title": STRING,
        "question": STRING,
        "headlines": ListOf(STRING),
    },
    required=("check",),
)
# ImageSet.to_dict() (plus the sample grid, for the synthetic set); free-form beyond these fields.
IMAGE_SET_SCHEMA = Record(
    {
        "name": STRING,
        "source": STRING,
        "count": COUNT,
        "shape": ListOf(COUNT),
        "num_classes": Nullable(COUNT),
        "labelled": BOOLEAN,
        "fingerprint": STRING,
        "samples_png": STRING,
    },
    keep_unknown=True,
)
RESULT_SCHEMA = Record(
    {
        "schema": STRING,
        "synthetic": IMAGE_SET_SCHEMA,
        "reference": Record(
            {"dataset": Nullable(STRING), "split_id": Nullable(STRING), "members": IMAGE_SET_SCHEMA,
             "holdout": IMAGE_SET_SCHEMA, "test": IMAGE_SET_SCHEMA},
            keep_unknown=True,
        ),
        # name null: no check of the audit used image features
        "feature_extractor": Record({"name": Nullable(STRING), "dim": Nullable(COUNT), "sha256": Nullable(STRING)},
                                    keep_unknown=True),
        "seed": INTEGER,
        "profile": STRING,
        "checks": DictOf(CHECK_SCHEMA),
        "manifest": Nullable(MANIFEST_SCHEMA),
        "manifest_missing": ListOf(STRING),
        "warnings": ListOf(STRING),
        "nearest_neighbors": Record(
            {"index": STRING,
             "approximate": ListOf(Record({"index": STRING, "k": COUNT, "recall": NUMBER, "recall_queries": COUNT,
                                           "target": NUMBER, "check": Nullable(STRING)},
                                          required=("index", "k", "recall", "recall_queries"), keep_unknown=True))},
            required=("index",),
            keep_unknown=True,
        ),
        "versions": DictOf(STRING),
        "settings": OBJECT,
        "created": STRING,
        "dpaudit_version": STRING,
    },
    required=("schema", "synthetic", "reference", "feature_extractor", "seed", "profile"),
)


@dataclass
class CheckResult:
    """The outcome of one check (fidelity, utility, similarity, membership, ...)."""

    check: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    details: dict = field(default_factory=dict)
    figures: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    # From the check's declaration (dpaudit/audit/spec.py); empty in results of older versions.
    title: str = ""
    question: str = ""
    headlines: list[str] = field(default_factory=list)

    def add_figure(self, name: str, image: np.ndarray, caption: str) -> None:
        """Attach a uint8 image (H x W or H x W x 3) as an embedded PNG."""
        self.figures[name] = {"caption": caption, "png": encode_png(image)}


@dataclass
class AuditResult:
    """Everything one `evaluate` run found, plus the provenance needed to trust and compare it."""

    synthetic: dict
    reference: dict
    feature_extractor: dict
    seed: int
    profile: str
    checks: dict[str, CheckResult] = field(default_factory=dict)
    manifest: dict | None = None
    manifest_missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # The nearest-neighbour index asked for, and every search that used an approximate one
    # (dpaudit/approximate_search.py SearchRecord: its settings and measured recall).
    nearest_neighbors: dict = field(default_factory=lambda: {"index": "exact", "approximate": []})
    versions: dict[str, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # the profile as used (dpaudit/audit/profiles.py)
    created: str = ""
    dpaudit_version: str = ""
    schema: str = SCHEMA

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def save(self, path: str | Path) -> Path:
        """Write result.json atomically (a temporary file beside it, then a rename): a full disk
        or a crash leaves the previous file whole. DpauditError naming the file if it fails."""
        text = self.to_json() + "\n"  # before anything is touched: a failure here leaves the old file
        with staged(path) as temporary:
            temporary.write_text(text, encoding="utf-8")
        return Path(path)

    @classmethod
    def from_dict(cls, data: dict, source: str = "result") -> AuditResult:
        """An AuditResult from parsed result.json, every field's type checked (RESULT_SCHEMA);
        DpauditError naming `source` and the field otherwise. Unknown fields are ignored."""
        at = At(source)
        if not isinstance(data, dict):
            raise at.error(f"not a dpaudit result: the document is {describe(data)}, not an object with schema {SCHEMA!r}")
        schema = data.get("schema")
        if schema != SCHEMA:
            if "schema" not in data:
                got = "no schema"
            elif isinstance(schema, str) and len(schema) <= 40:
                got = f"schema {schema!r}"
            else:
                got = f"schema {describe(schema)}"
            raise at.error(f"not a dpaudit result ({got}, expected {SCHEMA!r})")
        check_values(data, at)
        data = RESULT_SCHEMA(data, at)
        checks = {
            name: CheckResult(
                check=c["check"],
                metrics={k: Metric(**m) for k, m in c.get("metrics", {}).items()},
                details=c.get("details", {}),
                figures=c.get("figures", {}),
                seconds=c.get("seconds", 0.0),
                title=c.get("title", ""),
                question=c.get("question", ""),
                headlines=c.get("headlines", []),
            )
            for name, c in data.pop("checks", {}).items()
        }
        return cls(checks=checks, **data)

    def get(self, path: str) -> float | None:
        """The number at `<check>.<metric>[.<field>]`; DpauditError if the path names nothing."""
        parts = path.split(".")
        if len(parts) not in (2, 3):
            raise DpauditError(f"metric path {path!r} must look like check.metric or check.metric.field.")
        check = self.checks.get(parts[0])
        if check is None:
            raise DpauditError(f"metric path {path!r}: no check {parts[0]!r} in this result (have {sorted(self.checks)}).")
        metric = check.metrics.get(parts[1])
        if metric is None:
            raise DpauditError(f"metric path {path!r}: check {parts[0]!r} has no metric {parts[1]!r} (have {sorted(check.metrics)}).")
        if len(parts) == 2:
            return metric.value
        fields = {"value": metric.value, "baseline": metric.baseline, "target": metric.target}
        if metric.ci is not None:
            fields.update(ci_low=metric.ci[0], ci_high=metric.ci[1])
        if parts[2] not in fields:
            raise DpauditError(f"metric path {path!r}: no field {parts[2]!r} (have {sorted(fields)}).")
        return fields[parts[2]]


def load_result(path: str | Path) -> AuditResult:
    """Read a result.json written by `evaluate`, checking its size, nesting and schema."""
    return AuditResult.from_dict(parse_json(read_text(path, max_bytes=MAX_RESULT_BYTES), path), str(path))


def encode_png(image: np.ndarray) -> str:
    """A uint8 image (H x W, H x W x 1 or H x W x 3) as base64 PNG text."""
    from PIL import Image

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _jsonable(obj):
    """numpy scalars/arrays -> Python; NaN and infinity -> None (JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
