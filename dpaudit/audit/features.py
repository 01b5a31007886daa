"""Feature extractors: images -> N x D features, the space where fidelity (FID, KID,
precision / recall / density / coverage) and feature-based attacks are measured.

`load_extractor(reference, spec)` picks one:

- `None` or `"lenet"` (the offline default): the 84-dimensional penultimate layer of
  `dpaudit.nets.LeNet`. For a built-in dataset's default split (seed 0) the network ships in
  `dpaudit/weights/` and its sha256 is verified at load; for any other reference a LeNet is
  trained on the members with the same recipe and kept in the user cache (dpaudit/cache.py).
- `"inception"`: Inception-v3 pool features (2048 dimensions) through torchmetrics /
  torch-fidelity (`pip install 'dpaudit[inception]'`), the space published FIDs are in; the
  standard weights are downloaded into the user cache on first use (needs internet).
- `"inception:/path/to/weights.pth"`: the same from a weights file the user supplies (offline).
- an `nn.Module` (Python API): its outputs, flattened, are the features.

Numbers from different extractors are not comparable; `describe()` names the extractor and
the sha256 of its weights, and the result records it.

`CachedExtractor(extractor)` (or `extractor.cached()`) is the same extractor with its features
kept in the user cache (`<cache>/feature-sets/`) under a hash of the weights, the exact float32
pixels, the batch size, the device type and torch's version, so that the members and holdout of
a reference are extracted once across audits and `compare` runs; a hit is bit-identical to the
computation it replaces, and a corrupt or mis-shaped entry is recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import tempfile
import warnings
import weakref
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from dpaudit.cache import cache_dir, entry_path, load_entry, save_entry
from dpaudit.datasets import Reference
from dpaudit.errors import DpauditError
from dpaudit.images import ImageSet, to_uint8
from dpaudit.nets import LeNet, resolve_device, to_device, train_classifier

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
WEIGHTS_INDEX = WEIGHTS_DIR / "lenet.json"

# How every LeNet feature net is trained, shipped or cached. Changing it changes the cache key.
LENET_RECIPE = {"version": 1, "lr": 1e-3, "batch_size": 128, "seed": 0, "samples_seen": 500_000, "min_epochs": 10, "max_epochs": 100}


def lenet_epochs(n_members: int) -> int:
    """Epochs for a member set of this size: about `samples_seen` images in all, within [min, max]."""
    epochs = math.ceil(LENET_RECIPE["samples_seen"] / max(n_members, 1))
    return int(min(LENET_RECIPE["max_epochs"], max(LENET_RECIPE["min_epochs"], epochs)))


def train_lenet(members: ImageSet, *, device: str | torch.device = "cpu", progress: str | None = None) -> LeNet:
    """A LeNet classifier trained on the labelled `members` with LENET_RECIPE (deterministic on one machine)."""
    if not members.has_labels:
        raise DpauditError(f"{members.source or members.name}: the members need labels to train the LeNet feature net.")
    torch.manual_seed(LENET_RECIPE["seed"])  # the initial weights
    model = LeNet(members.shape[0], members.num_classes)
    train_classifier(
        model, members.pixels, members.y,
        epochs=lenet_epochs(len(members)), seed=LENET_RECIPE["seed"], lr=LENET_RECIPE["lr"],
        batch_size=LENET_RECIPE["batch_size"], device=device, progress=progress,
    )
    return model.cpu().eval()


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _LeNetFeatures(nn.Module):
    """The penultimate layer of a LeNet as a module of its own."""

    def __init__(self, lenet: LeNet):
        super().__init__()
        self.lenet = lenet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lenet.features(x)


class FeatureExtractor:
    """Callable `ImageSet -> Tensor` (N x dim, float32, CPU), batched, without gradients."""

    def __init__(
        self,
        module: nn.Module,
        *,
        name: str,
        dim: int,
        sha256: str,
        device: torch.device,
        batch_size: int = 512,
        channels: tuple[int, ...] | None = None,
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
        info: dict | None = None,
    ):
        self.module = module.to(device).eval()
        self.name, self.dim, self.sha256 = name, dim, sha256
        self.device, self.batch_size = device, batch_size
        self.channels, self.preprocess = channels, preprocess
        self.info = info or {}

    @torch.no_grad()
    def __call__(self, images: ImageSet) -> torch.Tensor:
        if self.channels is not None and images.shape[0] not in self.channels:
            raise DpauditError(
                f"{images.source or images.name}: {images.shape[0]}-channel images, but the feature "
                f"extractor {self.name} takes {' or '.join(map(str, self.channels))}-channel images."
            )
        self.module.eval()
        n_batches = -(-len(images) // self.batch_size)
        out = []
        batches = images.pixels.blocks(self.batch_size)  # a memory map's pages let go batch by batch
        for _, batch in tqdm(batches, desc=f"features {images.name}", total=n_batches, leave=False,
                             disable=n_batches < 20):
            batch = to_device(batch, self.device)
            if self.preprocess is not None:
                batch = self.preprocess(batch)
            out.append(self.module(batch).reshape(len(batch), -1).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def describe(self) -> dict:
        """What the result records: name, dim, sha256 of the weights, and where they came from."""
        return {"name": self.name, "dim": self.dim, "sha256": self.sha256, **self.info}

    def cached(self) -> "CachedExtractor":
        """This extractor with its features kept in the user cache (see CachedExtractor)."""
        return CachedExtractor(self)


# ---------------------------------------------------------------- the feature cache

FEATURE_CACHE_KIND = "feature-sets"  # <cache_dir>/feature-sets/<extractor name>-<hash>.pt
FEATURE_CACHE_FORMAT = 1  # changing what an entry holds changes every key

# pixel_digest's memo: id(stored array) -> (weak reference, version counter, digest).
_DIGESTS: dict[int, tuple[weakref.ref, int, str]] = {}


def pixel_digest(images: ImageSet) -> str:
    """sha256 of the exact pixels (as stored) and their shape: the content the features depend on.

    Not `ImageSet.fingerprint()`: that hashes the pixels rounded to uint8 (two float sets one
    rounding apart share it, e.g. a generator's samples and their PNGs) and the labels (which
    features do not depend on), and is slower (0.5-1 s against 0.09 s for 50,000 MNIST-sized
    images on one core: the uint8 conversion dominates). The pixels as stored are hashed (float32,
    or 8-bit: a memory-mapped set and the same set read into memory share the digest), block by
    block. Memoised per stored array: a tensor changed in place through torch (its version
    counter moves) or an ImageSet given new pixels is hashed again; writes through a numpy view
    are not seen.
    """
    data = images.pixels.data
    version = data._version if isinstance(data, torch.Tensor) else 0
    memo = _DIGESTS.get(id(data))
    if memo is not None and memo[0]() is data and memo[1] == version:
        return memo[2]
    h = hashlib.sha256()
    dtype = data.dtype if isinstance(data, torch.Tensor) else torch.uint8  # numpy arrays are 8-bit
    h.update(f"{tuple(data.shape)} {dtype}".encode())
    for block in images.pixels.stored_blocks():
        h.update(block.detach().cpu().numpy() if isinstance(block, torch.Tensor) else block)
    digest = h.hexdigest()
    if memo is None or memo[0]() is not data:
        weakref.finalize(data, _DIGESTS.pop, id(data), None)
    _DIGESTS[id(data)] = (weakref.ref(data), version, digest)
    return digest


class CachedExtractor:
    """A FeatureExtractor whose features are cached on disk, a drop-in `ImageSet -> Tensor`.

    A call looks up the user cache (never the shipped one) under a hash of the extractor's name
    and sha256, the exact pixels (`pixel_digest`), its batch size and device type (batch shapes
    and kernels change the last bits) and torch's version. On a hit it returns the stored tensor,
    bit-identical to what the extractor computed; on a miss (no entry, an unreadable one, or one
    whose shape is not len(images) x dim) it computes the features, writes them atomically and
    returns them. Entries are read with `weights_only=True`. `name`, `dim`, `sha256`,
    `describe()` and every other attribute are the wrapped extractor's; `hits` and `misses`
    count the calls of each kind.
    """

    def __init__(self, extractor: FeatureExtractor):
        if isinstance(extractor, CachedExtractor):  # one cache is enough
            extractor = extractor.extractor
        self.extractor = extractor
        self.hits = 0
        self.misses = 0

    def __getattr__(self, name: str):
        if name == "extractor":  # not yet set (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.extractor, name)

    def describe(self) -> dict:
        return self.extractor.describe()

    def entry_path(self, images: ImageSet) -> Path:
        """Where the features of `images` are cached."""
        ex = self.extractor
        depends_on = {
            "format": FEATURE_CACHE_FORMAT, "extractor": ex.name, "sha256": ex.sha256, "dim": ex.dim,
            "pixels": pixel_digest(images), "batch_size": ex.batch_size, "device": torch.device(ex.device).type,
            "torch": torch.__version__,
        }
        prefix = re.sub(r"[^A-Za-z0-9._-]", "_", ex.name)
        return entry_path(FEATURE_CACHE_KIND, prefix, depends_on)

    def __call__(self, images: ImageSet) -> torch.Tensor:
        if len(images) == 0:  # nothing to compute or to keep
            return self.extractor(images)
        path = self.entry_path(images)
        expected = (len(images), self.extractor.dim)
        entry = load_entry(path, shipped=False)
        stored = entry.get("features") if isinstance(entry, dict) else None
        if isinstance(stored, torch.Tensor) and stored.dtype == torch.float32 and tuple(stored.shape) == expected:
            self.hits += 1
            return stored
        self.misses += 1
        features = self.extractor(images)
        if tuple(features.shape) == expected:  # else the next call would miss again anyway
            try:
                save_entry(path, {
                    "features": features, "extractor": self.extractor.name, "sha256": self.extractor.sha256,
                    "pixels": pixel_digest(images), "images": images.name,
                })
            except OSError as e:  # a full disk or a read-only cache costs speed, not the audit
                warnings.warn(f"{path}: could not cache the features of {images.name} ({e}).", stacklevel=2)
        return features


def load_extractor(reference: Reference, spec: str | nn.Module | None = None, device: str | torch.device = "cpu") -> FeatureExtractor:
    """The feature extractor for `reference`: `None`/`"lenet"`, `"inception:PATH"` or an `nn.Module`."""
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if isinstance(spec, nn.Module):
        return _module_extractor(spec, reference, device)
    if spec is None or spec == "lenet":
        return _lenet_extractor(reference, device)
    if spec == "inception":
        return _inception_extractor(inception_weights(), device)
    if isinstance(spec, str) and spec.startswith("inception:"):
        return _inception_extractor(Path(spec[len("inception:") :]).expanduser(), device)
    raise DpauditError(
        f"unknown feature extractor {spec!r}; use 'lenet', 'inception', 'inception:/path/to/weights.pth' or pass an nn.Module."
    )


# ---------------------------------------------------------------- LeNet


def shipped_index() -> dict:
    """The shipped LeNet weights, per dataset: file, sha256, split_id, accuracies, recipe."""
    return json.loads(WEIGHTS_INDEX.read_text())["weights"]


def _lenet_extractor(reference: Reference, device: torch.device) -> FeatureExtractor:
    entry = shipped_index().get(reference.dataset or "")
    if entry is not None and entry["split_id"] == reference.split_id:
        model, sha = _load_shipped(entry)
        name = f"lenet-{reference.dataset}"
        info = {"source": "shipped", "trained_on": entry["split_id"], "test_accuracy": entry["test_accuracy"]}
    else:
        model, sha, path = _cached_lenet(reference.members, device)
        name = f"lenet-{reference.dataset or 'custom'}-{sha[:8]}"
        info = {"source": "trained on the members", "trained_on": reference.split_id, "path": str(path)}
    return FeatureExtractor(
        _LeNetFeatures(model), name=name, dim=LeNet.feature_dim, sha256=sha, device=device,
        channels=(model.body[0].in_channels,), info=info,
    )


def _state_dict_from_bytes(data: bytes, path: Path) -> dict:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... on a bad file
        raise DpauditError(f"{path}: not a readable weights file ({e}).") from None


def _load_shipped(entry: dict) -> tuple[LeNet, str]:
    path = WEIGHTS_DIR / entry["file"]
    data = path.read_bytes()
    sha = file_sha256(data)
    if sha != entry["sha256"]:
        raise DpauditError(
            f"{path}: sha256 {sha[:12]}... differs from the recorded {entry['sha256'][:12]}...; the shipped "
            "LeNet weights were modified (reinstall dpaudit or rerun scripts/train_feature_nets.py)."
        )
    model = LeNet(entry["in_channels"], entry["num_classes"])
    model.load_state_dict(_state_dict_from_bytes(data, path))
    return model.eval(), sha


def _cached_lenet(members: ImageSet, device: torch.device) -> tuple[LeNet, str, Path]:
    """A LeNet trained on `members`, from the user cache when this member set was seen before."""
    path = entry_path("features", "lenet", {"recipe": LENET_RECIPE, "members": members.fingerprint()})
    state = load_entry(path)
    if state is not None:
        model = LeNet(members.shape[0], members.num_classes)
        try:
            model.load_state_dict(state)
            return model.eval(), file_sha256(path.read_bytes()), path
        except RuntimeError:
            pass  # a stale entry (another architecture): train again and overwrite it
    model = train_lenet(members, device=device, progress="training the LeNet feature net on the members")
    return model, file_sha256(save_entry(path, model.state_dict())), path


# ---------------------------------------------------------------- Inception-v3


# The FID Inception-v3 weights (TensorFlow's 2015-12-05 graph, as torch-fidelity and pytorch-fid
# use them); torch.hub's convention: the file name carries the first hex digits of its sha256.
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
INCEPTION_SHA256_PREFIX = "6726825d"


def inception_weights() -> Path:
    """The standard FID Inception-v3 weights in the user cache, downloaded there on first use
    (needs internet; its sha256 is checked); DpauditError saying how to work offline otherwise."""
    path = cache_dir() / "weights" / Path(INCEPTION_URL).name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(INCEPTION_URL, str(path), hash_prefix=INCEPTION_SHA256_PREFIX, progress=True)
        except Exception as e:  # URLError offline, RuntimeError on a hash mismatch, ...
            path.unlink(missing_ok=True)
            raise DpauditError(f"downloading the Inception-v3 weights from {INCEPTION_URL} failed ({e}); download "
                               "that file where there is internet and use --features inception:PATH.") from None
    return path


def _inception_extractor(path: Path, device: torch.device) -> FeatureExtractor:
    """torch-fidelity's FID Inception-v3 (the 2048-dim pool features papers' FIDs use) from a
    weights file, read as tensors only: torch-fidelity itself unpickles the file it is given, so
    it gets a copy re-saved here from the checked state dict."""
    if not path.is_file():
        raise DpauditError(f"{path}: Inception-v3 weights file not found (spec 'inception:PATH').")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ModuleNotFoundError:
        raise DpauditError("Inception-v3 features need torch-fidelity: pip install 'dpaudit[inception]'.") from None
    data = path.read_bytes()
    state = _state_dict_from_bytes(data, path)
    with tempfile.TemporaryDirectory() as folder:
        checked = Path(folder) / "inception.pth"
        torch.save(state, checked)
        try:
            net = NoTrainInceptionV3("inception-v3-compat", ["2048"], str(checked))
        except ModuleNotFoundError:
            raise DpauditError("Inception-v3 features need torch-fidelity: pip install 'dpaudit[inception]'.") from None
        except Exception as e:  # weights of another architecture: RuntimeError (missing or unexpected keys), ...
            raise DpauditError(f"{path}: not Inception-v3 weights in torch-fidelity's layout ({str(e).splitlines()[0]}).") from None
    return FeatureExtractor(
        net, name="inception-v3", dim=2048, sha256=file_sha256(data), device=device, batch_size=64,
        channels=(1, 3), preprocess=_inception_input, info={"source": "file", "path": str(path)},
    )


def _inception_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 RGB, as torch-fidelity's Inception expects (grey images repeated on three channels)."""
    return to_uint8(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)


# ---------------------------------------------------------------- any nn.Module


def _module_extractor(module: nn.Module, reference: Reference, device: torch.device) -> FeatureExtractor:
    h = hashlib.sha256()
    for key, tensor in module.state_dict().items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    module = module.to(device).eval()
    sample = reference.members.take(slice(0, 2))
    with torch.no_grad():
        dim = module(sample.to(device)).reshape(len(sample), -1).shape[1]
    return FeatureExtractor(
        module, name=f"module-{type(module).__name__}", dim=dim, sha256=h.hexdigest(), device=device,
        batch_size=256, info={"source": "nn.Module"},
    )
