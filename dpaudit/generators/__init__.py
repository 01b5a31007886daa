"""Reference differentially-private generators. `GENERATORS` maps each CLI name to its class;
importing a generator's module below registers it (see dpaudit/generators/base.py).
dpaudit/generators/release.py starts a training run and releases its samples."""

from dpaudit.generators.base import (
    GENERATORS,
    Checkpointer,
    Generator,
    PrivacyReport,
    apply_overrides,
    get_generator,
    register,
)
from dpaudit.generators.dpsgd_gan import DPSGDGAN
from dpaudit.generators.bn_matching import BNMatching
from dpaudit.generators.latent_diffusion import LatentDiffusion
from dpaudit.generators.lipschitz_vae import LipschitzVAEGenerator
from dpaudit.generators.pearl import DPMERF, PEARL
from dpaudit.generators.release import SECRET_SEED_FILE, TrainingRun, fit_with_checkpoints, secret_seed, write_samples
from dpaudit.generators.saved import load_generator, save_generator

__all__ = ["DPMERF", "BNMatching", "LatentDiffusion", "LipschitzVAEGenerator", "DPSGDGAN", "GENERATORS", "PEARL", "Checkpointer", "Generator", "PrivacyReport", "apply_overrides", "get_generator", "register",
           "SECRET_SEED_FILE", "TrainingRun", "fit_with_checkpoints", "load_generator", "save_generator", "secret_seed",
           "write_samples"]
