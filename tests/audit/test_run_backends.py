"""The run backends: Ray tasks on a small local cluster give the local backend's audit."""

import numpy as np
import pytest

from dpaudit.audit.trainers import GeneratorTrainer
from dpaudit.audit.training_audit import TrainingAuditConfig, audit_training
from dpaudit.datasets import load_split
from dpaudit.errors import DpauditError
from dpaudit.generators import get_generator
from dpaudit.privacy import PrivacyBudget


def test_ray_and_local_backends_give_the_same_audit_for_the_same_seed():
    pytest.importorskip("ray")
    reference = load_split("digits")
    overrides = tuple(f"{k}={v}" for k, v in get_generator("dp-merf").test_overrides.items())
    config = TrainingAuditConfig(canaries=100, features=False)
    results = {
        backend: audit_training(GeneratorTrainer("dp-merf", overrides), reference, PrivacyBudget(1.0, 1e-5),
                                config=config, runs=2, seed=3, backend=backend, progress=False)
        for backend in ("local", "ray")
    }
    local, ray = (results[b].checks["training_audit"] for b in ("local", "ray"))
    assert local.details["verdict"] == ray.details["verdict"]
    assert local.metrics["ceiling"].value == ray.metrics["ceiling"].value
    for name in ("epsilon_lower_bound", "one_run_bound", "fdp_bound", "auc"):
        assert local.metrics[name].value == pytest.approx(ray.metrics[name].value, abs=1e-6), name
    assert np.allclose(local.details["score_hist"]["edges"], ray.details["score_hist"]["edges"], atol=1e-5)


def test_an_unknown_backend_is_refused():
    from dpaudit.audit.run_backends import run_jobs

    with pytest.raises(DpauditError, match="unknown backend 'spark'"):
        run_jobs([], backend="spark")
