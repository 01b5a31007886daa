"""Reference differentially-private generators. `GENERATORS` maps each CLI name to its class;
importing a generator's module below registers it (see dpaudit/generators/base.py)."""

from dpaudit.generators.base import (
    GENERATORS,
    Checkpointer,
    Generator,
    PrivacyReport,
    apply_overrides,
    get_generator,
    register,
)

__all__ = ["GENERATORS", "Checkpointer", "Generator", "PrivacyReport", "apply_overrides", "get_generator", "register"]
