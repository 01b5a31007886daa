"""Nearest neighbours up to small transformations: copies seen through shifts, rotations, flips
and intensity changes.

A generator that memorises and jitters (or a vendor who shifts its copies by two pixels) defeats
plain pixel L2: a translated digit is far from its source. The transformation-aware search
works in two steps, so that its cost stays bounded:

1. **Candidates.** The exact L2 search proposes each query's `candidates` nearest references in
   pixel space, and again in a shift-invariant space: the low-frequency magnitudes of the 2-D
   Fourier transform of the mean-centred, unit-norm image (a circular shift changes only the
   phase; on a dark background a small translation is one). The query turned back by each angle of the
   set (and flipped, where flips are allowed) proposes too: the spectrum ignores shifts, not
   turns.
2. **Re-ranking.** Each pair is measured under every transformation of the documented set
   (TransformConfig: translations of up to `max_shift` pixels, rotations by `rotations`
   degrees, horizontal flips where the dataset allows them), the candidate's intensity fitted
   to the query (`a * x + b` by least squares, `a` and `b` bounded); the smallest L2 over
   transformations is the pair's distance. The query is moved back (by the inverse move)
   rather than each candidate moved: the same distance up to the border, for N moved images
   per transformation instead of N x K.

Transforms are bilinear `grid_sample` moves with the border pixels extended (exact for integer
shifts). Written by hand: torchvision's functional transforms take one angle or shift per call,
and a chunk of queries needs every move of the set (and `aligned_pairs` a move per image) in one
batched call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dpaudit.neighbors import nearest_neighbors
from dpaudit.pixels import Pixels, as_pixels

# float64 values the re-ranking holds at once (256 MiB): a chunk of queries moved back by every
# transformation and their candidates. Counted in values, not pairs, so that 32x32 RGB images
# (4x MNIST's pixels) do not take 4x the memory.
ALIGN_VALUES = 1 << 25


@dataclass(frozen=True)
class TransformConfig:
    """The small transformations a copy may have gone through: translations of up to `max_shift`
    pixels (x and y), rotations by each angle of `rotations` (degrees, about the centre),
    horizontal flips when `flips`, intensity `a * x + b` with `a` in [1/max_gain, max_gain] and
    |b| <= max_offset when `intensity`; `candidates` per search space are re-ranked."""

    max_shift: int = 2
    rotations: tuple[float, ...] = (-10.0, -5.0, 5.0, 10.0)
    flips: bool = False
    intensity: bool = True
    max_gain: float = 1.25
    max_offset: float = 0.1
    candidates: int = 4

    @property
    def identity_only(self) -> bool:
        return self.max_shift == 0 and not self.rotations and not self.flips and not self.intensity

    def describe(self) -> dict:
        """What result.json records of the set: the transformations and their count."""
        return {"max_shift": self.max_shift, "rotations": list(self.rotations), "flips": self.flips,
                "intensity": self.intensity, "max_gain": self.max_gain, "max_offset": self.max_offset,
                "candidates": self.candidates, "transformations": len(affine_moves(self))}


NO_TRANSFORMS = TransformConfig(max_shift=0, rotations=(), flips=False, intensity=False)


def affine_moves(config: TransformConfig) -> list[tuple[float, float, float, bool]]:
    """Every move of the set as (dx pixels, dy pixels, angle degrees, flipped): the identity
    first, then the shifts, the rotations, and the flipped copies of all of them."""
    r = config.max_shift
    shifts = [(dx, dy) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    shifts.sort(key=lambda s: (s != (0, 0), abs(s[0]) + abs(s[1])))
    moves = [(float(dx), float(dy), 0.0, False) for dx, dy in shifts]
    moves += [(0.0, 0.0, float(a), False) for a in config.rotations if a != 0]
    if config.flips:
        moves += [(dx, dy, a, True) for dx, dy, a, _ in moves]
    return moves


def _thetas(moves, height: int, width: int) -> torch.Tensor:
    """[T, 2, 3] affine_grid matrices: output pixel p samples the input at R(p) - shift, so the
    content moves by (dx, dy) pixels and turns by the angle (align_corners=False coordinates)."""
    out = []
    for dx, dy, angle, flipped in moves:
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        fx = -1.0 if flipped else 1.0
        out.append([[c * fx, -s, -2 * dx / width], [s * fx, c, -2 * dy / height]])
    return torch.tensor(out, dtype=torch.float32)


def move(images: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
    """images [B, C, H, W], thetas [B, 2, 3] -> each image moved by its own transformation."""
    grid = F.affine_grid(thetas, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def spectrum(images: torch.Tensor) -> torch.Tensor:
    """Shift-invariant rows: the low-frequency magnitudes of the 2-D FFT of each mean-centred,
    unit-norm image (frequencies up to a quarter of the side, at least 3: most of a digit's
    energy and little of its pixel noise; 120 numbers for 28x28 instead of 784 pixels)."""
    x = images.float().flatten(1)
    x = x - x.mean(1, keepdim=True)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)
    magnitude = torch.fft.rfft2(x.reshape(images.shape)).abs()  # [N, C, H, W // 2 + 1]
    h = magnitude.shape[-2]
    f = min(max(3, h // 4), h // 2)
    rows = torch.cat([torch.arange(0, f + 1), torch.arange(h - f, h)]).unique()
    return magnitude[..., rows, : f + 1].flatten(1)


def propose(queries: torch.Tensor, refs: torch.Tensor | Pixels, config: TransformConfig,
            pixel_idx: torch.Tensor | None = None) -> torch.Tensor:
    """[N, K] reference indices worth re-ranking for each query: its L2-nearest in pixels
    (`pixel_idx` where the caller has searched already, else config.candidates of them), then,
    with transformations, the config.candidates nearest by spectrum of the query as it is and
    turned back by each angle (and flipped, where flips are allowed). Duplicates are kept (they
    re-rank to the same distance). The spectra of every turn are searched at once (the
    references' spectra computed once, block by block)."""
    k = min(config.candidates, len(refs))
    proposals = [nearest_neighbors(queries, refs, k=k)[1] if pixel_idx is None else pixel_idx]
    if not config.identity_only:
        # The spectrum ignores shifts, not turns: the query turned back by each angle proposes too.
        turns = [(0.0, 0.0, -angle, flipped) for angle in (0.0, *config.rotations)
                 for flipped in ((False, True) if config.flips else (False,))]
        thetas = _thetas(turns, *queries.shape[-2:])
        turned = torch.cat([
            queries.float() if turn == (0.0, 0.0, 0.0, False) else move(queries.float(), theta.expand(len(queries), 2, 3))
            for turn, theta in zip(turns, thetas)
        ])
        _, idx = nearest_neighbors(spectrum(turned), as_pixels(refs).map(spectrum), k=k)
        proposals += list(idx.reshape(len(turns), len(queries), idx.shape[1]).unbind(0))
    return torch.cat(proposals, 1)


def _gain_offset(sq, sc, scc, sqc, d: int, config: TransformConfig):
    """(a, b) of the intensity change a * c + b least-squares fitted to q from the sums of q, c,
    c^2 and q c over `d` pixels (a and b bounded; b refitted for the clamped a); (1, 0) without
    intensity changes."""
    if not config.intensity:
        return torch.ones_like(sqc), torch.zeros_like(sqc)
    cov = sqc - sq * sc / d
    var = (scc - sc * sc / d).clamp_min(1e-12)
    a = (cov / var).clamp(1 / config.max_gain, config.max_gain)
    b = ((sq - a * sc) / d).clamp(-config.max_offset, config.max_offset)
    return a, b


def moved_back(queries: torch.Tensor, config: TransformConfig) -> torch.Tensor:
    """[T, N, C, H, W]: each query moved by the inverse of each move of the set. Comparing the
    query moved back with a reference is comparing the query with the moved reference (up to
    the border), and moves N images per transformation instead of N x K candidates."""
    inverse = _inverse_thetas(config, *queries.shape[-2:])
    q = queries.float()
    return torch.stack([q if t == 0 else move(q, inverse[t].expand(len(q), 2, 3)) for t in range(len(inverse))])


def _inverse_thetas(config: TransformConfig, height: int, width: int) -> torch.Tensor:
    """[T, 2, 3] affine_grid matrices of the inverse of each move of the set."""
    thetas = _thetas(affine_moves(config), height, width)
    full = torch.cat([thetas, torch.tensor([[[0.0, 0.0, 1.0]]]).expand(len(thetas), 1, 3)], 1)
    return torch.linalg.inv(full)[:, :2]


def align(queries: torch.Tensor, refs: torch.Tensor | Pixels, candidates: torch.Tensor,
          config: TransformConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Each (query, candidate) pair's smallest L2 distance over the transformations (with the
    intensity fitted): (distances [N, K] float64, move index [N, K] into affine_moves(config),
    0 = identity). The squared distance of every pair and move comes from five sums (one batched
    product per move), not from moved images."""
    n, k = candidates.shape
    d = refs[0].numel()
    best = torch.full((n, k), math.inf, dtype=torch.float64)
    best_move = torch.zeros((n, k), dtype=torch.long)
    rows = max(1, ALIGN_VALUES // ((k + len(affine_moves(config))) * d))
    for start in range(0, n, rows):
        back = moved_back(queries[start : start + rows], config).flatten(2).double()  # [T, B, D]
        c = refs[candidates[start : start + rows]].flatten(2).double()  # [B, K, D]
        sc, scc = c.sum(2), c.pow(2).sum(2)  # [B, K]
        for t in range(len(back)):
            q = back[t]
            sq, sqq = q.sum(1, keepdim=True), q.pow(2).sum(1, keepdim=True)  # [B, 1]
            sqc = torch.bmm(c, q[:, :, None])[:, :, 0]  # [B, K]
            a, b = _gain_offset(sq, sc, scc, sqc, d, config)
            # |q - a c - b|^2, expanded
            sq_dist = sqq - 2 * a * sqc - 2 * b * sq + a * a * scc + 2 * a * b * sc + d * b * b
            dist = sq_dist.clamp_min(0).sqrt()
            window = best[start : start + rows]
            better = dist < window
            best[start : start + rows] = torch.where(better, dist, window)
            best_move[start : start + rows][better] = t
    return best, best_move


def aligned_pairs(queries: torch.Tensor, refs: torch.Tensor | Pixels, idx: torch.Tensor, move_idx: torch.Tensor,
                  config: TransformConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(queries[i] moved back by its move, refs[idx[i]] with the intensity fitted to it), both
    clamped to [0, 1]: the pair that `align` measured, for SSIM. idx, move_idx: [N]."""
    back = move(queries.float(), _inverse_thetas(config, *queries.shape[-2:])[move_idx])
    ref = refs[idx].float()
    q, c = back.flatten(1).double(), ref.flatten(1).double()
    a, b = _gain_offset(q.sum(1, keepdim=True), c.sum(1, keepdim=True), c.pow(2).sum(1, keepdim=True),
                        (q * c).sum(1, keepdim=True), q.shape[1], config)
    fitted = (a * c + b).float().reshape(ref.shape)
    return back.clamp(0, 1), fitted.clamp(0, 1)


def nearest_transformed(queries: torch.Tensor, refs: torch.Tensor | Pixels,
                        config: TransformConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each query's nearest reference up to the transformations: (distance [N] float64, reference
    index [N], move index [N])."""
    candidates = propose(queries, refs, config)
    d, moves = align(queries, refs, candidates, config)
    d, pos = d.min(1)
    return d, candidates.gather(1, pos[:, None])[:, 0], moves.gather(1, pos[:, None])[:, 0]
