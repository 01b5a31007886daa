"""dpaudit: audit synthetic image data for privacy and usefulness."""

__version__ = "0.1.0"

from dpaudit.datasets import Reference, load_split, reference_from_folders  # noqa: E402
from dpaudit.errors import DpauditError  # noqa: E402
from dpaudit.images import ImageSet, load_images, save_images  # noqa: E402
from dpaudit.manifest import Manifest, read_manifest  # noqa: E402
from dpaudit.privacy import PrivacyBudget  # noqa: E402

__all__ = [
    "DpauditError",
    "ImageSet",
    "Manifest",
    "PrivacyBudget",
    "Reference",
    "load_images",
    "load_split",
    "read_manifest",
    "reference_from_folders",
    "save_images",
]
