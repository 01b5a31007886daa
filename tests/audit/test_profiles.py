"""The typed profiles: one object per profile, its settings recorded in result.json."""

import json
from dataclasses import FrozenInstanceError, replace

import pytest
from click.testing import CliRunner

from dpaudit.attacks import RECONSTRUCTION_ATTACKS
from dpaudit.attacks.gradient_matching import InversionConfig
from dpaudit.audit.pipeline import CHECKS, evaluate
from dpaudit.audit.profiles import PAPER, PROFILES, QUICK, STANDARD, get_profile
from dpaudit.cli import cli
from dpaudit.errors import DpauditError


def test_profiles_by_name_and_unknown_names():
    assert get_profile("quick") is QUICK and get_profile(STANDARD) is STANDARD
    assert list(PROFILES) == ["quick", "standard", "paper"]
    with pytest.raises(DpauditError, match="unknown profile 'fast'; choose one of quick, standard, paper"):
        get_profile("fast")
    with pytest.raises(FrozenInstanceError):
        QUICK.grid_rows = 3


def test_every_check_finds_its_settings_and_budgets_grow_with_the_profile():
    for profile in PROFILES.values():
        for name in RECONSTRUCTION_ATTACKS:
            assert isinstance(profile.settings(name), RECONSTRUCTION_ATTACKS[name].Config)
        for name in ("fidelity", "utility", "similarity", "membership"):
            assert profile.settings(name) is getattr(profile, name)
    assert isinstance(QUICK.gradient_matching, InversionConfig)
    assert QUICK.gradient_matching.iterations < STANDARD.gradient_matching.iterations < PAPER.gradient_matching.iterations
    assert QUICK.membership.per_side < STANDARD.membership.per_side < PAPER.membership.per_side
    assert QUICK.membership.attack_config("downstream_lira").shadows == 0  # quick trains no shadow models
    assert QUICK.membership.attack_config("distance_pixel") is None  # an attack without settings


def test_result_json_records_the_settings_actually_used(digits, tmp_path):
    profile = replace(QUICK, similarity=replace(QUICK.similarity, max_synthetic=100, n_worst=4))
    result = evaluate(digits.test, digits, profile=profile, checks=["similarity"], progress=False)
    saved = json.loads(result.to_json())
    assert saved["profile"] == "quick" and saved["settings"]["similarity"] == {"max_synthetic": 100, "n_worst": 4}
    assert saved["settings"]["gradient_matching"]["iterations"] == QUICK.gradient_matching.iterations
    assert saved["settings"]["membership"]["attacks"]["domias"] == {"n_components": 8, "max_fit": 5000}
    assert result.checks["similarity"].details["worst_pairs"].__len__() == 4
    assert saved["checks"]["similarity"]["title"] == CHECKS["similarity"].title


def test_the_cli_refuses_an_unknown_profile_in_one_line(tmp_path):
    out = CliRunner().invoke(cli, ["evaluate", "--synthetic", str(tmp_path), "--dataset", "digits", "--profile", "fast"])
    assert out.exit_code == 2 and "unknown profile 'fast'" in out.output
