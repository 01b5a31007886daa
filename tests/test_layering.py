"""The package's layering, read from its import statements (function-level imports included):
cli -> audit -> attacks / generators -> shared modules; reports read results only; no check
module imports another check module; nothing imports the CLI."""

import ast
from pathlib import Path

import pytest

import dpaudit
from dpaudit.audit.pipeline import CHECKS

PACKAGE = Path(dpaudit.__file__).parent
CHECK_MODULES = {"dpaudit.audit.fidelity", "dpaudit.audit.utility", "dpaudit.audit.similarity",
                 "dpaudit.audit.membership_check", "dpaudit.audit.privacy_claim", "dpaudit.audit.reconstruction"}


def _module(path: Path) -> str:
    return ".".join(("dpaudit", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")


def imports() -> dict[str, set[str]]:
    """module -> the dpaudit modules it imports."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dpaudit"):
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names if a.name.startswith("dpaudit")}
        found[_module(path)] = names
    return found


def _within(names: set[str], prefix: str) -> set[str]:
    return {n for n in names if n == prefix or n.startswith(prefix + ".")}


def test_the_check_modules_are_the_registered_checks():
    modules = {CHECKS[name].run.__module__ for name in CHECKS}
    assert modules == CHECK_MODULES


@pytest.mark.parametrize("module", sorted(CHECK_MODULES))
def test_no_check_module_imports_another(module):
    others = CHECK_MODULES - {module}
    assert not {n for n in imports()[module] if any(n == o or n.startswith(o + ".") for o in others)}


def test_imports_run_downward_only():
    for module, names in imports().items():
        if module.startswith(("dpaudit.attacks", "dpaudit.generators")):
            assert not _within(names, "dpaudit.audit") | _within(names, "dpaudit.reports"), module
        if module.startswith("dpaudit.reports"):  # a result, a verdict and the scorecard read from them, nothing of how they were made
            read = _within(names, "dpaudit.audit") - {"dpaudit.audit"}
            assert all(n.startswith(("dpaudit.audit.result", "dpaudit.audit.gate", "dpaudit.audit.scorecard")) for n in read), module
        if module not in ("dpaudit.cli", "dpaudit.__main__"):  # `python -m dpaudit` is the command line
            assert not _within(names, "dpaudit.cli"), module
