"""One harness for every test that holds a dpaudit function against an independent reference
implementation (scikit-image, scipy, scikit-learn, a brute-force or closed-form re-computation).

The pattern of torchmetrics' `MetricTester` (tests/unittests/_helpers/testers.py): a comparison
names our function, the reference and the generated inputs once, with one tolerance, and the
harness runs both on every input and says, when they disagree, on which input, at which output
and entry, and by how much.

    case = ReferenceCase(
        "nearest_neighbors k=3",
        ours=lambda q, r: nearest_neighbors(q, r, k=3),
        reference=lambda q, r: brute_force_neighbors(q, r, 3),
        inputs={"ties": (queries, refs), "uniform": (q2, r2)},
        rtol=1e-6, compare=("values", "indices"),
    )
    assert_matches_reference(case)  # or @reference_cases(case, ...) on a test taking `case`
    compare_to_reference(pairwise_ssim, skimage_ssim, {"28x28": (a, b)}, atol=1e-3, rtol=0.0)

Both return [(ours, reference)] per input, so that a test can assert more on the outputs.

- `inputs`: a mapping {label: args} or a sequence of args (labelled by position), or a
  zero-argument callable returning either (inputs made only when the test runs). `args` is a
  tuple of positional arguments; anything else is the single argument. Options that only one
  side takes go into a lambda or functools.partial.
- outputs: scalars (Python, numpy, 0-d tensors), numpy arrays, torch tensors, lists, and
  tuples / lists / dicts of them (compared leaf by leaf; dicts need the same keys); strings,
  None and other leaves that are not numbers must be equal.
- `compare`: "values" (|ours - reference| <= atol + rtol * |reference| everywhere, as
  numpy.isclose; NaN and infinities must sit at the same entries) or "indices" (integer
  outputs equal entry by entry: which neighbour, which candidate), or a tuple / dict of them
  mirroring the output, e.g. ("values", "indices") for (distances, indices).

Both functions get the same input objects: a reference must not modify its inputs (the harness
does not copy them). Shared reference implementations live here too (`brute_force_neighbors`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch

MODES = ("values", "indices")


@dataclass(frozen=True)
class ReferenceCase:
    """Our function against a reference on some inputs, with one tolerance."""

    name: str
    ours: Callable[..., Any]
    reference: Callable[..., Any]
    inputs: Mapping[str, Any] | Sequence[Any] | Callable[[], Mapping[str, Any] | Sequence[Any]]
    atol: float = 0.0
    rtol: float = 0.0
    compare: Any = "values"

    def __str__(self) -> str:
        return self.name


def brute_force_neighbors(queries, refs, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference nearest-neighbour search: the min(k, M) nearest rows of `refs` (rows
    flattened) by float64 squared distances to every reference, ties to the lower index."""
    q, r = queries.reshape(len(queries), -1).double(), refs.reshape(len(refs), -1).double()
    d = ((q[:, None, :] - r[None]) ** 2).sum(-1).numpy()
    order = np.lexsort((np.broadcast_to(np.arange(d.shape[1]), d.shape), d), axis=1)[:, :k]
    return torch.from_numpy(np.take_along_axis(d, order, 1)), torch.from_numpy(order)


def reference_cases(*cases: ReferenceCase):
    """`pytest.mark.parametrize("case", cases)` with the case names as test ids."""
    return pytest.mark.parametrize("case", cases, ids=[case.name for case in cases])


def assert_matches_reference(case: ReferenceCase) -> list[tuple[Any, Any]]:
    """Run `case`; AssertionError naming the input and the largest deviation on the first mismatch.
    Returns [(ours, reference)] per input, so a test can assert more without recomputing."""
    return compare_to_reference(
        case.ours, case.reference, case.inputs, atol=case.atol, rtol=case.rtol, compare=case.compare, name=case.name
    )


def compare_to_reference(
    ours: Callable[..., Any],
    reference: Callable[..., Any],
    inputs,
    *,
    atol: float,
    rtol: float,
    compare: Any = "values",
    name: str | None = None,
) -> list[tuple[Any, Any]]:
    """`ours(*args)` against `reference(*args)` for every input (see the module docstring);
    returns [(ours, reference)] per input."""
    if atol < 0 or rtol < 0:
        raise ValueError("tolerances must be >= 0")
    _check_modes(compare)
    name = name or f"{_name(ours, 'ours')} vs {_name(reference, 'the reference')}"
    if callable(inputs):
        inputs = inputs()
    labelled = list(inputs.items()) if isinstance(inputs, Mapping) else [(f"#{i}", x) for i, x in enumerate(inputs)]
    if not labelled:
        raise ValueError(f"{name}: no inputs to compare on")
    results = []
    for label, args in labelled:
        args = args if isinstance(args, tuple) else (args,)
        got, want = ours(*args), reference(*args)
        _compare(got, want, compare, atol, rtol, where=f"{name}, input {label}", path="")
        results.append((got, want))
    return results


def _name(function, default: str) -> str:
    name = getattr(function, "__name__", "<lambda>")
    return default if name == "<lambda>" else name


def _check_modes(compare) -> None:
    if isinstance(compare, str):
        if compare not in MODES:
            raise ValueError(f"compare must be one of {MODES} (or a tuple / dict of them), got {compare!r}")
    elif isinstance(compare, Mapping):
        for mode in compare.values():
            _check_modes(mode)
    elif isinstance(compare, (tuple, list)):
        for mode in compare:
            _check_modes(mode)
    else:
        raise TypeError(f"compare must be one of {MODES} (or a tuple / dict of them), got {compare!r}")


def _is_leaf(x) -> bool:
    return isinstance(x, (torch.Tensor, np.ndarray, np.generic, int, float, bool, complex, str, bytes)) or x is None


def _compare(got, want, mode, atol, rtol, where, path) -> None:
    at = f"{where}, output {path}" if path else where
    if isinstance(mode, str) and _is_array_like(got) and _is_array_like(want):
        _compare_leaf(got, want, mode, atol, rtol, at)
        return
    if not isinstance(mode, str) and _is_array_like(want):
        raise ValueError(f"{at}: compare={mode!r} does not mirror the output (a single array)")
    if isinstance(got, Mapping) or isinstance(want, Mapping):
        if not (isinstance(got, Mapping) and isinstance(want, Mapping)):
            raise AssertionError(f"{at}: ours is {type(got).__name__}, the reference {type(want).__name__}")
        if set(got) != set(want):
            raise AssertionError(
                f"{at}: different keys; only ours: {sorted(map(str, set(got) - set(want)))}, "
                f"only the reference: {sorted(map(str, set(want) - set(got)))}"
            )
        if isinstance(mode, Mapping) and set(mode) != set(want):
            raise ValueError(f"{at}: compare has keys {sorted(map(str, mode))}, the output {sorted(map(str, want))}")
        for key in want:
            sub = mode[key] if isinstance(mode, Mapping) else mode
            _compare(got[key], want[key], sub, atol, rtol, where, f"{path}[{key!r}]")
        return
    if isinstance(got, (list, tuple)) and isinstance(want, (list, tuple)):
        if len(got) != len(want):
            raise AssertionError(f"{at}: ours has {len(got)} outputs, the reference {len(want)}")
        if not isinstance(mode, str) and len(mode) != len(want):
            raise ValueError(f"{at}: {len(mode)} compare modes for {len(want)} outputs")
        for i, (g, w) in enumerate(zip(got, want)):
            _compare(g, w, mode if isinstance(mode, str) else mode[i], atol, rtol, where, f"{path}[{i}]")
        return
    raise AssertionError(f"{at}: cannot compare ours ({type(got).__name__}) with the reference ({type(want).__name__})")


def _is_array_like(x) -> bool:
    """A leaf, or a flat list / tuple of numbers (compared as one array)."""
    return _is_leaf(x) or (
        isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(v, (int, float, np.number)) for v in x)
    )


def _as_array(x) -> np.ndarray | None:
    """A numpy array of a numeric leaf, else None."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype != torch.float64:
            x = x.double()  # numpy has no bfloat16
        return x.numpy()
    if isinstance(x, (str, bytes)) or x is None:
        return None
    array = np.asarray(x)
    return array if array.dtype.kind in "biufc" else None


def _compare_leaf(got, want, mode, atol, rtol, at) -> None:
    a, b = _as_array(got), _as_array(want)
    if a is None or b is None:
        if a is None and b is None and got == want:
            return
        raise AssertionError(f"{at}: ours {got!r} != reference {want!r}")
    if a.shape != b.shape:
        raise AssertionError(f"{at}: ours has shape {a.shape}, the reference {b.shape}")
    if a.size == 0:
        return
    if mode == "indices":
        for side, x in (("ours", a), ("the reference", b)):
            if x.dtype.kind not in "biu":
                raise AssertionError(f"{at}: indices expected, {side} has dtype {x.dtype}")
        wrong = a != b
        if wrong.any():
            first = _entry(np.argmax(wrong), a.shape)
            raise AssertionError(
                f"{at}: {int(wrong.sum())} of {a.size} indices differ; first{_at(first)}: "
                f"ours {a[first]}, reference {b[first]}"
            )
        return
    if "c" in a.dtype.kind + b.dtype.kind:
        raise AssertionError(f"{at}: complex outputs (ours {a.dtype}, reference {b.dtype})")
    a, b = a.astype(np.float64), b.astype(np.float64)
    finite = np.isfinite(a) & np.isfinite(b)
    special_ok = ~finite & ((a == b) | (np.isnan(a) & np.isnan(b)))
    if not np.all(finite | special_ok):
        first = _entry(np.argmax(~(finite | special_ok)), a.shape)
        raise AssertionError(
            f"{at}: non-finite values differ at {int((~(finite | special_ok)).sum())} of {a.size} entries; "
            f"first{_at(first)}: ours {a[first]}, reference {b[first]}"
        )
    with np.errstate(invalid="ignore"):
        deviation = np.where(finite, np.abs(a - b), 0.0)
        allowed = np.where(finite, atol + rtol * np.abs(b), np.inf)
    bad = finite & (deviation > allowed)
    if bad.any():
        worst = _entry(np.argmax(np.where(bad, deviation, -1.0)), a.shape)  # the largest of those beyond tolerance
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.where(b != 0, deviation / np.abs(b), np.where(deviation > 0, np.inf, 0.0))
        raise AssertionError(
            f"{at}: {int(bad.sum())} of {a.size} values beyond atol={atol:g} + rtol={rtol:g} * |reference|; "
            f"largest deviation {deviation[worst]:.3g}{_at(worst)} (ours {a[worst]:.10g}, reference {b[worst]:.10g}, "
            f"allowed {allowed[worst]:.3g}); largest relative deviation {float(relative.max()):.3g}"
        )


def _entry(flat_index, shape) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(flat_index), shape)) if shape else ()


def _at(entry: tuple[int, ...]) -> str:
    return f" at {entry[0] if len(entry) == 1 else entry}" if entry else ""
