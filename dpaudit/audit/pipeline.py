"""evaluate(): validate the inputs, run the checks in order, return one AuditResult.

The checks are a plain registry (CHECKS) of check declarations (dpaudit/audit/spec.py): adding
a check is one module ending in `CHECK = CheckSpec(...)` and one line here; a reconstruction
attack registered in dpaudit/attacks becomes a check by itself. Everything is validated before
the long work starts.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

import torch
from tqdm.auto import tqdm

from dpaudit import __version__
from dpaudit.approximate_search import search_settings
from dpaudit.audit import fidelity, membership_check, privacy_claim, reconstruction, similarity, utility
from dpaudit.audit.context import AuditContext
from dpaudit.audit.features import FeatureExtractor, load_extractor
from dpaudit.audit.figures import sample_grid
from dpaudit.audit.profiles import QUICK, Profile, get_profile
from dpaudit.audit.result import AuditResult, encode_png
from dpaudit.audit.spec import CheckSpec
from dpaudit.datasets import Reference
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet
from dpaudit.manifest import Manifest, library_versions
from dpaudit.nets import resolve_device

CHECKS: dict[str, CheckSpec] = {
    spec.name: spec
    for spec in (fidelity.CHECK, utility.CHECK, similarity.CHECK, membership_check.CHECK, privacy_claim.CHECK,
                 *reconstruction.CHECKS)
}


def validate(synthetic: ImageSet, reference: Reference, checks: list[str]) -> None:
    """Refuse inputs that cannot be audited, before any long work, with one clear sentence."""
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise DpauditError(f"unknown check {unknown[0]!r}; available checks are {', '.join(CHECKS)}.")
    if len(synthetic) == 0:
        raise DpauditError(f"{synthetic.source}: the synthetic set is empty.")
    if synthetic.shape != reference.members.shape:
        raise DpauditError(
            f"{synthetic.source}: synthetic images are {_shape(synthetic.shape)} but the real images are "
            f"{_shape(reference.members.shape)}; resize them to match."
        )
    classes = reference.members.num_classes
    if synthetic.y is not None and len(synthetic.y) and (int(synthetic.y.min()) < 0 or int(synthetic.y.max()) >= classes):
        bad = int(synthetic.y.min()) if int(synthetic.y.min()) < 0 else int(synthetic.y.max())
        raise DpauditError(f"{synthetic.source}: label {bad} is outside the reference's classes 0..{classes - 1}.")


def _shape(shape: tuple[int, int, int]) -> str:
    c, h, w = shape
    return f"{w}x{h} with {c} channel{'s' if c > 1 else ''}"


def _manifest_warnings(manifest: Manifest | None, reference: Reference) -> list[str]:
    if manifest is None:
        return ["The synthetic set has no manifest.json: the claimed epsilon and the training split are unknown."]
    warnings = []
    if manifest.missing:
        warnings.append(f"manifest.json lacks {', '.join(manifest.missing)}.")
    if manifest.split_id and manifest.split_id != reference.split_id:
        warnings.append(
            f"The manifest says the generator trained on split {manifest.split_id}, but the audit uses "
            f"{reference.split_id}: membership results do not measure the generator's real members."
        )
    return warnings


def _recall_warnings(searches) -> list[str]:
    """A warning for each approximate search that missed the recall target (HNSW at its widest)."""
    return [
        f"The {s.check} check's nearest-neighbour search used an approximate {s.index.upper()} index whose "
        f"recall@{s.k} was {s.recall:.3f} (target {s.target}): some nearest images may be missed; use --nn-index exact."
        for s in searches if s.recall < s.target
    ]


class LazyExtractor:
    """The feature extractor, loaded on first use: an audit whose checks need no features never
    pays for it (for a custom reference, loading means training a LeNet on the members)."""

    def __init__(self, load: Callable[[], FeatureExtractor]):
        self._load = load
        self._extractor: FeatureExtractor | None = None

    def get(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = self._load()
        return self._extractor

    def __call__(self, images: ImageSet) -> torch.Tensor:
        return self.get()(images)

    def __getattr__(self, name: str):
        return getattr(self.get(), name)

    def describe(self) -> dict:
        if self._extractor is None:
            return {"name": None, "note": "no check of this audit used image features"}
        return self._extractor.describe()


def evaluate(
    synthetic: ImageSet,
    reference: Reference,
    *,
    profile: Profile | str = QUICK,
    checks: list[str] | None = None,
    seed: int = 0,
    device: str = "cpu",
    manifest: Manifest | None = None,
    extractor=None,
    nn_index: str = "auto",
    progress: bool = True,
) -> AuditResult:
    """Audit `synthetic` against `reference` and return the AuditResult.

    `profile` is a Profile (dpaudit/audit/profiles.py) or the name of a built-in one; `checks`
    defaults to every registered check; `extractor` is None (the shipped LeNet for a built-in
    dataset, one trained on the members otherwise), "inception:PATH", or an nn.Module; `nn_index`
    the nearest-neighbour index (dpaudit/approximate_search.py: auto, exact, ivf, hnsw).
    """
    profile = get_profile(profile)
    checks = list(CHECKS) if checks is None else list(checks)
    validate(synthetic, reference, checks)
    ctx = AuditContext(synthetic, reference, profile, seed, resolve_device(device), manifest)
    ctx.warnings.extend(_manifest_warnings(manifest, reference))
    if synthetic.y is None:
        skipped = [c for c in checks if CHECKS[c].needs_labels]
        if skipped:
            ctx.warn(f"The synthetic set has no labels, so {', '.join(skipped)} did not run.")
        checks = [c for c in checks if not CHECKS[c].needs_labels]
    feature_extractor = LazyExtractor(lambda: load_extractor(reference, extractor, ctx.device))
    ctx.extractor = feature_extractor

    results = {}
    bar = tqdm(checks, desc="dpaudit", disable=not progress)
    with search_settings(nn_index) as searches:
        for name in bar:
            bar.set_postfix_str(name)
            start, searched = time.perf_counter(), len(searches)
            check = CHECKS[name](ctx)
            check.seconds = round(time.perf_counter() - start, 3)
            results[name] = check
            for record in searches[searched:]:
                record.check = name
    ctx.warnings.extend(_recall_warnings(searches))

    synthetic_summary = synthetic.to_dict()
    synthetic_summary["samples_png"] = encode_png(sample_grid(synthetic, seed=seed))
    return AuditResult(
        synthetic=synthetic_summary,
        reference=reference.to_dict(),
        feature_extractor=feature_extractor.describe(),
        seed=seed,
        profile=profile.name,
        settings=profile.to_dict(),
        checks=results,
        manifest=None if manifest is None else manifest.to_dict(),
        manifest_missing=[] if manifest is None else manifest.missing,
        warnings=ctx.warnings,
        nearest_neighbors={"index": nn_index, "approximate": [record.to_dict() for record in searches]},
        versions=library_versions(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        dpaudit_version=__version__,
    )
