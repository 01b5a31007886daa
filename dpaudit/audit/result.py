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
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dpaudit.errors import DpauditError
from dpaudit.metric import DIRECTIONS, Metric

SCHEMA = "dpaudit.result/1"
__all__ = ["DIRECTIONS", "SCHEMA", "AuditResult", "CheckResult", "Metric", "encode_png", "load_result"]


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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict) -> "AuditResult":
        data = dict(data)
        checks = {
            name: CheckResult(
                check=c["check"],
                metrics={k: Metric(**_tuples(m)) for k, m in c.get("metrics", {}).items()},
                details=c.get("details", {}),
                figures=c.get("figures", {}),
                seconds=c.get("seconds", 0.0),
                title=c.get("title", ""),
                question=c.get("question", ""),
                headlines=list(c.get("headlines", [])),
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
    """Read a result.json written by `evaluate`, checking its schema."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DpauditError(f"{path}: no such file.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DpauditError(f"{path}: not valid JSON ({e}).") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise DpauditError(f"{path}: not a dpaudit result (expected schema {SCHEMA!r}).")
    try:
        return AuditResult.from_dict(data)
    except (TypeError, KeyError, ValueError) as e:
        raise DpauditError(f"{path}: malformed dpaudit result ({e}).") from None


def encode_png(image: np.ndarray) -> str:
    """A uint8 image (H x W, H x W x 1 or H x W x 3) as base64 PNG text."""
    from PIL import Image

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(image.astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _tuples(metric: dict) -> dict:
    metric = dict(metric)
    for key in ("range", "ci"):
        if metric.get(key) is not None:
            metric[key] = tuple(metric[key])
    return metric


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
