"""Shared fixtures. MNIST tests carry `@pytest.mark.mnist` and skip unless the IDX files are
found (through DPAUDIT_DATA or the user cache); digits is always available."""

import os
import shutil
import tempfile

import pytest

from dpaudit.cache import cache_dir
from dpaudit.datasets import load_split, locate


def pytest_configure(config):
    """A fresh user cache for the session, so tests neither read nor fill the real one; data
    files downloaded into the real cache stay findable through DPAUDIT_DATA when it is unset."""
    os.environ.setdefault("DPAUDIT_DATA", str(cache_dir()))
    config.dpaudit_cache = tempfile.mkdtemp(prefix="dpaudit-test-cache-")
    os.environ["DPAUDIT_CACHE"] = config.dpaudit_cache


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "dpaudit_cache", ""), ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if locate("mnist") is not None:
        return
    skip = pytest.mark.skip(reason="MNIST not found: set DPAUDIT_DATA to a folder holding mnist/")
    for item in items:
        if "mnist" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def digits():
    """The digits reference: 1,077 members, 360 holdout, 360 test (seed 0)."""
    return load_split("digits")


@pytest.fixture(scope="session")
def mnist():
    """The MNIST reference with the default split (50,000 members, 10,000 holdout, seed 0)."""
    return load_split("mnist")
