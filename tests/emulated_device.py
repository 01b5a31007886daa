"""An accelerator emulated on the CPU, for tests that check that every tensor follows `--device`.

Inside `Emulation()`, the `meta` device stands in for a GPU: a tensor created on or moved to
`meta` is an `OnDevice` wrapper around real CPU data, so the audit computes its real numbers,
while every operation is checked as a GPU checks it: mixing a device tensor with a CPU tensor (other
than a 0-dim scalar, or the indices of an indexing) raises. (The meta device has no random
generators, so where generators draw is left to the tests on a real GPU.) Heavy
operations (convolutions, matrix products) that run on CPU tensors are recorded in
`fallbacks`: the silent CPU fallback a real run would hide. The meta device is used because
torch's autograd engine runs its tensors on the CPU thread and no driver is needed."""

from __future__ import annotations

import traceback

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, return_and_correct_aliasing
from torch.utils._pytree import tree_leaves, tree_map

DEVICE = torch.device("meta")
aten = torch.ops.aten
HEAVY = {aten.convolution.default, aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default,
         aten.convolution_backward.default, aten._cdist_forward.default}
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
CROSS_DEVICE = {aten._to_copy.default, aten.copy_.default}  # the ops that move data between devices


class OnDevice(torch.Tensor):
    """A tensor on the emulated device: CPU data in `inner`, reported as on `DEVICE`."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        wrapper = torch.Tensor._make_wrapper_subclass(
            cls, inner.shape, strides=inner.stride(), storage_offset=inner.storage_offset(), dtype=inner.dtype,
            device=DEVICE, requires_grad=inner.requires_grad, layout=inner.layout,
        )
        wrapper.inner = inner
        return wrapper

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func} ran on an emulated device tensor outside Emulation()")

    # A traceable wrapper (flatten / unflatten): Module.to then swaps the tensors in place, as a
    # real device's .to keeps the Parameter objects an optimizer already holds.
    def __tensor_flatten__(self):
        return ["inner"], None

    @staticmethod
    def __tensor_unflatten__(inner_tensors, meta, outer_size, outer_stride):
        return OnDevice(inner_tensors["inner"])

    def tolist(self):  # torch reads a subclass's values through its own storage only
        return self.inner.tolist()

    def __repr__(self):
        return f"OnDevice({self.inner!r})"


def _caller() -> str:
    """The dpaudit frames calling torch, innermost first: `module.py:function <- ...`."""
    frames = [f"{frame.filename.rsplit('/dpaudit/', 1)[1]}:{frame.name}" for frame in reversed(traceback.extract_stack())
              if "/dpaudit/" in frame.filename and "/tests/" not in frame.filename]
    return " <- ".join(frames) or "outside dpaudit"


class _Constructors(TorchFunctionMode):
    """torch.tensor(data, device=...) and torch.as_tensor build their tensor below the dispatcher:
    build it on the CPU and move it, through the dispatcher, instead."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.tensor, torch.as_tensor) and kwargs.get("device") is not None:
            device = kwargs.pop("device")
            return func(*args, **kwargs).to(device)
        return func(*args, **kwargs)


class Recording(TorchDispatchMode):
    """Records, on a real device, where dpaudit ran heavy ops on CPU tensors (`fallbacks`) and how
    many host buffers it pinned (`pinned`)."""

    def __init__(self):
        super().__init__()
        self.fallbacks: list[str] = []
        self.pinned = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in HEAVY and all(a.device.type == "cpu" for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)):
            self.fallbacks.append(_caller())
        self.pinned += func is aten._pin_memory.default
        return func(*args, **kwargs)


class Emulation(TorchDispatchMode):
    """Runs `meta` tensors on the CPU and records what a GPU would have refused or run elsewhere."""

    def __init__(self):
        super().__init__()
        self.fallbacks: list[str] = []  # where dpaudit ran a heavy op on CPU tensors (`_caller()`)
        self._constructors = _Constructors()

    def __enter__(self):
        self._constructors.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self._constructors.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves = tree_leaves((args, kwargs))
        on_device = any(isinstance(a, OnDevice) for a in leaves)
        checked = (args[:1], {}) if func in INDEXING else (args, kwargs)  # indices may stay on the CPU
        on_cpu = [a for a in tree_leaves(checked) if isinstance(a, torch.Tensor) and not isinstance(a, OnDevice) and a.dim() > 0]
        device = kwargs.get("device")
        to_device = device is not None and torch.device(device).type == DEVICE.type
        if func not in CROSS_DEVICE and on_device and on_cpu:
            raise RuntimeError(f"Expected all tensors to be on the same device, but found {DEVICE} and cpu ({func}) in {_caller()}")
        if func in HEAVY and not on_device:
            self.fallbacks.append(_caller())
        if device is not None:
            kwargs = dict(kwargs, device=torch.device("cpu"))
        plain_args, plain_kwargs = tree_map(lambda a: a.inner if isinstance(a, OnDevice) else a, (args, kwargs))
        out = func(*plain_args, **plain_kwargs)
        if not (to_device or (on_device and device is None)):
            return out

        wrapped = tree_map(lambda o: OnDevice(o) if isinstance(o, torch.Tensor) else o, out)
        # In-place and view ops return (or alias) their input: torch's helper for wrapper
        # subclasses hands back the input wrapper, with its sizes updated (squeeze_, t_, ...).
        return return_and_correct_aliasing(func, args, kwargs, wrapped)
