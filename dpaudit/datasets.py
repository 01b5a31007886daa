"""Built-in datasets and the members / holdout / test splits every audit stands on.

A dataset's official training split is permuted with a seed: the first `n_members` indices
are the members (what a generator may train on), the next `n_holdout` the holdout (never
seen by a generator). The official test split is used only for utility. Random rather than
"first N" membership is what makes one-run epsilon lower bounds valid.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dpaudit.cache import cache_dir
from dpaudit.errors import DpauditError

if TYPE_CHECKING:
    from dpaudit.images import ImageSet

DEBIAN_FASHION_MNIST = Path("/usr/share/dataset-fashion-mnist")
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class DatasetInfo:
    """What dpaudit knows about a built-in dataset."""

    name: str
    description: str
    num_classes: int
    shape: tuple[int, int, int]
    n_members: int
    n_holdout: int
    folder_names: tuple[str, ...] = ()
    # sha256 of the DECOMPRESSED IDX files: gzip headers differ between mirrors.
    sha256: dict[str, str] | None = None


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(
        "digits", "scikit-learn's 8x8 handwritten digits, embedded", 10, (1, 8, 8), 1077, 360
    ),
    "mnist": DatasetInfo(
        "mnist", "MNIST handwritten digits, 28x28 grey", 10, (1, 28, 28), 50_000, 10_000,
        ("mnist", "MNIST/raw"),
        {
            "train_x": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train_y": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "test_x": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "test_y": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "Fashion-MNIST clothing, 28x28 grey", 10, (1, 28, 28), 50_000, 10_000,
        ("fashion-mnist", "FashionMNIST/raw"),
        {
            "train_x": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train_y": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "test_x": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "test_y": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    ),
    "cifar10": DatasetInfo(
        "cifar10", "CIFAR-10, 32x32 colour (through torchvision)", 10, (3, 32, 32), 40_000, 10_000,
        ("cifar-10-batches-py",),
    ),
}


def get_info(name: str) -> DatasetInfo:
    """The DatasetInfo of a built-in dataset, or a clear error listing the names."""
    if name not in DATASETS:
        raise DpauditError(f"unknown dataset {name!r}; built-in datasets are {', '.join(DATASETS)}.")
    return DATASETS[name]


def _roots(data_root: str | Path | None) -> list[tuple[Path, str]]:
    roots = []
    if data_root:
        roots.append((Path(data_root), "--data-root"))
    if os.environ.get("DPAUDIT_DATA"):
        roots.append((Path(os.environ["DPAUDIT_DATA"]), "DPAUDIT_DATA"))
    roots.append((cache_dir(), "user cache"))
    return roots


def _idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def locate(name: str, data_root: str | Path | None = None) -> tuple[Path, str] | None:
    """Where a dataset's files are: (folder, how it was found), or None. Digits is embedded."""
    info = get_info(name)
    if name == "digits":
        return Path("sklearn.datasets.load_digits"), "embedded"
    candidates = [(root / sub, how) for root, how in _roots(data_root) for sub in info.folder_names]
    if name == "fashion-mnist":
        candidates.append((DEBIAN_FASHION_MNIST, "Debian dataset-fashion-mnist"))
    for folder, how in candidates:
        if name == "cifar10":
            if (folder / "data_batch_1").is_file():
                return folder.parent, how
        elif all(_idx_file(folder, stem) for stem in IDX_FILES.values()):
            return folder, how
    return None


def _missing_message(name: str) -> str:
    return (
        f"dataset {name!r} was not found under --data-root, $DPAUDIT_DATA or {cache_dir()}; "
        f"point DPAUDIT_DATA at a folder holding {name}/ with the official files, "
        "or pass --download when online."
    )


def _download(name: str) -> None:
    """Fetch a dataset through torchvision into the user cache (needs internet)."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    try:
        for train in (True, False):
            cls(str(cache_dir()), train=train, download=True)
    except Exception as e:  # torchvision raises URLError, RuntimeError, ... when offline
        raise DpauditError(f"downloading {name!r} through torchvision failed ({e}).") from None


@functools.lru_cache(maxsize=4)
def _load_official_cached(name: str, folder: str) -> tuple[ImageSet, ImageSet]:
    # Imported here: dpaudit.images needs torch, and `dpaudit datasets` only looks for files.
    from dpaudit.images import from_array, read_idx, read_idx_bytes

    info = DATASETS[name]
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels = (digits.images / 16.0).astype(np.float32)
        n_train = len(pixels) - 360  # the last 360 images are the test split, as in sklearn's examples
        train = from_array(pixels[:n_train], digits.target[:n_train], name="digits-train", source="digits", num_classes=10)
        test = from_array(pixels[n_train:], digits.target[n_train:], name="digits-test", source="digits", num_classes=10)
        return train, test
    if name == "cifar10":
        import torchvision.datasets as tvd

        sets = []
        for train in (True, False):
            ds = tvd.CIFAR10(folder, train=train, download=False)
            sets.append(from_array(ds.data, np.array(ds.targets), name=f"cifar10-{'train' if train else 'test'}", source=folder, num_classes=10))
        return sets[0], sets[1]
    arrays = {}
    for key, stem in IDX_FILES.items():
        path = _idx_file(Path(folder), stem)
        raw = read_idx_bytes(path)  # decompressed once: hashed, then parsed
        if hashlib.sha256(raw).hexdigest() != info.sha256[key]:
            raise DpauditError(f"{path}: checksum mismatch; the file is corrupt or not the official {name}.")
        arrays[key] = read_idx(path, raw)
    train = from_array(arrays["train_x"], arrays["train_y"], name=f"{name}-train", source=folder, num_classes=10)
    test = from_array(arrays["test_x"], arrays["test_y"], name=f"{name}-test", source=folder, num_classes=10)
    return train, test


def load_official(name: str, data_root: str | Path | None = None, download: bool = False) -> tuple[ImageSet, ImageSet]:
    """The official (train, test) splits of a built-in dataset, checksums verified."""
    found = locate(name, data_root)
    if found is None and download:
        _download(name)
        found = locate(name, data_root)
    if found is None:
        raise DpauditError(_missing_message(name))
    return _load_official_cached(name, str(found[0]))


@dataclass
class Reference:
    """The real data an audit compares against: members, holdout, test, and the split id."""

    members: ImageSet
    holdout: ImageSet
    test: ImageSet
    split_id: str
    dataset: str | None = None

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "split_id": self.split_id,
            "members": self.members.to_dict(),
            "holdout": self.holdout.to_dict(),
            "test": self.test.to_dict(),
        }


def split_indices(n_train: int, n_members: int, n_holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Member and holdout indices into the training split: a seeded random permutation."""
    if n_members + n_holdout > n_train:
        raise DpauditError(
            f"members ({n_members}) + holdout ({n_holdout}) exceed the {n_train} training images."
        )
    perm = np.random.default_rng(seed).permutation(n_train)
    return np.sort(perm[:n_members]), np.sort(perm[n_members : n_members + n_holdout])


def split_id(name: str, seed: int, member_idx: np.ndarray, n_holdout: int) -> str:
    """`dataset:seed:members:holdout:fingerprint`, the fingerprint being a hash of the member indices."""
    digest = hashlib.sha256(np.asarray(member_idx, dtype=np.int64).tobytes()).hexdigest()[:12]
    return f"{name}:s{seed}:m{len(member_idx)}:h{n_holdout}:{digest}"


def load_split(
    name: str,
    seed: int = 0,
    *,
    n_members: int | None = None,
    n_holdout: int | None = None,
    data_root: str | Path | None = None,
    download: bool = False,
) -> Reference:
    """Members, holdout and test of a built-in dataset for a seed (defaults: the dataset's sizes)."""
    info = get_info(name)
    train, test = load_official(name, data_root, download)
    n_members = info.n_members if n_members is None else n_members
    n_holdout = info.n_holdout if n_holdout is None else n_holdout
    member_idx, holdout_idx = split_indices(len(train), n_members, n_holdout, seed)
    sid = split_id(name, seed, member_idx, n_holdout)
    return Reference(
        train.subset(member_idx, f"{name}-members"),
        train.subset(holdout_idx, f"{name}-holdout"),
        test,
        sid,
        name,
    )


def reference_from_folders(members: str | Path, holdout: str | Path, test: str | Path) -> Reference:
    """A Reference from the user's own members, holdout and test sets (any readable format).
    The split id is made from the content fingerprints of the three sets."""
    from dpaudit.images import load_images

    sets = [load_images(p, name=role) for p, role in ((members, "members"), (holdout, "holdout"), (test, "test"))]
    shapes = {s.shape for s in sets}
    if len(shapes) > 1:
        raise DpauditError(f"members, holdout and test have different image shapes {sorted(shapes)}.")
    if not all(s.has_labels for s in sets):
        unlabeled = next(p for p, s in zip((members, holdout, test), sets) if not s.has_labels)
        raise DpauditError(f"{unlabeled}: the reference sets need labels (class folders or labels.csv).")
    num_classes = max(s.num_classes for s in sets)
    for s in sets:
        s.num_classes = num_classes
    digest = hashlib.sha256("".join(s.fingerprint() for s in sets).encode()).hexdigest()[:12]
    sid = f"custom:m{len(sets[0])}:h{len(sets[1])}:{digest}"
    return Reference(*sets, split_id=sid, dataset=None)


def available(data_root: str | Path | None = None) -> list[dict]:
    """One row per built-in dataset: name, description, whether and where it was found."""
    rows = []
    for name, info in DATASETS.items():
        found = locate(name, data_root)
        rows.append(
            {
                "name": name,
                "description": info.description,
                "found": found is not None,
                "where": "" if found is None else f"{found[0]} ({found[1]})",
            }
        )
    return rows



def load_split_by_id(sid: str, data_root: str | Path | None = None, download: bool = False) -> Reference:
    """Rebuild the split named by a split id (e.g. from a manifest) and check its fingerprint."""
    try:
        name, seed, members, holdout, _ = sid.split(":")
        reference = load_split(
            name, int(seed[1:]), n_members=int(members[1:]), n_holdout=int(holdout[1:]),
            data_root=data_root, download=download,
        )
    except ValueError:
        raise DpauditError(f"split id {sid!r} is not of the form dataset:s<seed>:m<members>:h<holdout>:<hash>.") from None
    if reference.split_id != sid:
        raise DpauditError(
            f"split id {sid!r} does not match the split rebuilt from it ({reference.split_id}); "
            "it was made by another dpaudit version or by hand."
        )
    return reference
