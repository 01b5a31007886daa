"""dpaudit: audit synthetic image data for privacy and usefulness.

The public API, re-exported lazily: `import dpaudit` loads no torch; `dpaudit.evaluate` (say)
imports its module on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "evaluate": "dpaudit.audit.pipeline",
    "AuditResult": "dpaudit.audit.result",
    "load_result": "dpaudit.audit.result",
    "apply_policy": "dpaudit.audit.gate",
    "load_policy": "dpaudit.audit.gate",
    "QUICK": "dpaudit.audit.profiles",
    "STANDARD": "dpaudit.audit.profiles",
    "PAPER": "dpaudit.audit.profiles",
    "Profile": "dpaudit.audit.profiles",
    "GENERATORS": "dpaudit.generators",
    "get_generator": "dpaudit.generators",
    "DpauditError": "dpaudit.errors",
    "ImageSet": "dpaudit.images",
    "load_images": "dpaudit.images",
    "save_images": "dpaudit.images",
    "Manifest": "dpaudit.manifest",
    "read_manifest": "dpaudit.manifest",
    "PrivacyBudget": "dpaudit.privacy",
    "Reference": "dpaudit.datasets",
    "load_split": "dpaudit.datasets",
    "reference_from_folders": "dpaudit.datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'dpaudit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
