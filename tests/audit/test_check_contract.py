"""The contract every registered check keeps, whatever it measures: it runs on the digits
reference in a small profile, returns a CheckResult of its name stamped with its declaration,
reports its headline metrics with valid directions, is JSON-ready and repeatable for a seed,
and refuses (or is skipped for) an unlabelled set exactly when it declares that it needs labels."""

from dataclasses import replace

import math

import pytest

from dpaudit.attacks.gan_attack import GANAttackConfig
from dpaudit.attacks.gradient_matching import InversionConfig
from dpaudit.attacks.memorization import MemorizationConfig
from dpaudit.audit.context import AuditContext
from dpaudit.audit.features import load_extractor
from dpaudit.audit.pipeline import CHECKS, evaluate
from dpaudit.audit.profiles import QUICK
from dpaudit.audit.result import AuditResult
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet
from dpaudit.metric import DIRECTIONS

SMALL = replace(
    QUICK,
    classifiers=replace(QUICK.classifiers, min_steps=60),
    membership=replace(QUICK.membership, per_side=100, reference=100),
    gradient_matching=InversionConfig(method="geiping", iterations=20, restarts=1, batches=2, batch_size=1),
    gan_attack=GANAttackConfig(steps=20, n_prototypes=1),
    memorization=MemorizationConfig(method="correlation", n_secrets=2, epochs=2, max_train=200),
    grid_rows=2,
)


def _run(name, synthetic, digits, seed=0):
    ctx = AuditContext(synthetic, digits, SMALL, seed)
    ctx.extractor = load_extractor(digits)
    return CHECKS[name](ctx)


@pytest.fixture(scope="module")
def results(digits):
    synthetic = digits.holdout
    return {name: _run(name, synthetic, digits) for name in CHECKS}


@pytest.mark.parametrize("name", list(CHECKS))
def test_a_check_reports_its_declared_headlines(results, name):
    spec, result = CHECKS[name], results[name]
    assert result.check == name
    assert (result.title, result.question, result.headlines) == (spec.title, spec.question, list(spec.headlines))
    assert spec.title and spec.question.endswith((".", "?"))
    assert set(spec.headlines) <= set(result.metrics)
    for metric in result.metrics.values():
        assert metric.direction in DIRECTIONS and metric.meaning
        assert math.isnan(metric.value) or math.isfinite(metric.value)
        if metric.range is not None and math.isfinite(metric.value):
            assert metric.range[0] - 1e-9 <= metric.value <= metric.range[1] + 1e-9, (name, metric)


@pytest.mark.parametrize("name", list(CHECKS))
def test_a_check_is_json_ready_and_repeatable(results, digits, name):
    wrap = lambda r: AuditResult(synthetic={}, reference={}, feature_extractor={}, seed=0, profile="quick",  # noqa: E731
                                 checks={name: r}).to_dict()["checks"][name]
    first, again = wrap(results[name]), wrap(_run(name, digits.holdout, digits))
    for run in (first, again):
        run.pop("seconds")
        run["details"].pop("trtr_from_cache", None)  # the second run reads the ceiling from the cache
    assert first == again


@pytest.mark.parametrize("name", list(CHECKS))
def test_labels_are_needed_exactly_where_declared(digits, name):
    unlabelled = ImageSet(digits.holdout.x, None, None, "unlabelled", "unlabelled.npz")
    if CHECKS[name].needs_labels:
        with pytest.raises(DpauditError, match="unlabelled.npz"):
            _run(name, unlabelled, digits)
        result = evaluate(unlabelled, digits, profile=SMALL, checks=[name], progress=False)
        assert name not in result.checks and any(name in w for w in result.warnings)
    else:
        assert _run(name, unlabelled, digits).metrics
