"""A pretend CUDA device for graders, so device bugs fail on a machine without a GPU.

Inside `fake_cuda()`, a FakeCudaTensor
reports device cuda:0; `.numpy()` refuses it as it refuses a CUDA tensor; `.cpu()` / `.to("cpu")` copy it
into a plain CPU tensor; factories asked for a CUDA device build FakeCudaTensors; operations on one return
FakeCudaTensors; and mixing one with a CPU tensor of one or more dimensions raises, as CUDA does (0-dim CPU
tensors, CPU index tensors and cross-device `copy_` are allowed, as on CUDA). Its memory is CPU memory
throughout: only the `cuda` tests check the real thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

FAKE_CUDA = torch.device("cuda", 0)
_INDEX_ARG = {"__getitem__": 1, "__setitem__": 1, "index_put": 1, "index_put_": 1, "index_select": 2}
_IN_PLACE_DUNDERS = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__",
                     "__ipow__", "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__",
                     "__imatmul__"}  # fmt: skip


class FakeCudaTensor(torch.Tensor):
    """CPU memory that plays a tensor on cuda:0 inside `fake_cuda()`."""

    __torch_function__ = torch._C._disabled_torch_function_impl


def on_fake_cuda(t: torch.Tensor) -> FakeCudaTensor:
    """A copy of `t` "on the GPU": a leaf, requiring grad when `t` does."""
    return torch.Tensor._make_subclass(FakeCudaTensor, t.detach().clone(), t.requires_grad)


def _is_fake(x: object) -> bool:
    return isinstance(x, FakeCudaTensor)


def _as_fake(t: torch.Tensor) -> torch.Tensor:
    return t if _is_fake(t) else t.as_subclass(FakeCudaTensor)


class _FakeCudaMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        tensors = [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
        fake = [x for x in tensors if _is_fake(x)]
        if fake:
            if func == torch.Tensor.device.__get__:
                return FAKE_CUDA
            if func == torch.Tensor.is_cuda.__get__:
                return True
            if func == torch.Tensor.is_cpu.__get__:
                return False
            if func is torch.Tensor.get_device:
                return FAKE_CUDA.index
            if func in (torch.Tensor.numpy, torch.Tensor.__array__) and not kwargs.get("force", False):
                raise TypeError(
                    "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                    "to host memory first."
                )
        target = None  # the device the call asks for, when it names one
        if func is torch.Tensor.cpu:
            target = torch.device("cpu")
        elif func is torch.Tensor.cuda:
            target, func, args, kwargs = FAKE_CUDA, torch.Tensor.clone, args[:1], {}
        elif func is torch.Tensor.to:
            if len(args) > 1 and isinstance(args[1], torch.Tensor):
                target = FAKE_CUDA if _is_fake(args[1]) else args[1].device
                dtype = args[1].dtype
            else:
                target, dtype, _, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
            moves = target is not None and (target.type == "cuda") != _is_fake(args[0])
            dtype = dtype if dtype is not None else args[0].dtype
            args, kwargs = (args[0], dtype), {"copy": bool(kwargs.get("copy", False) or moves)}
        elif kwargs.get("device") is not None:
            spec = kwargs["device"]
            target = torch.device("cuda", spec) if isinstance(spec, int) else torch.device(spec)
            if target.type == "cuda":
                kwargs["device"] = "cpu"
        if target is None and fake:
            _check_same_device(name, args, kwargs, tensors)
        out = func(*args, **kwargs)
        in_place = (name.endswith("_") and not name.startswith("__")) or name in _IN_PLACE_DUNDERS
        if target is not None:
            to_cuda = target.type == "cuda"
        elif in_place and args and isinstance(args[0], torch.Tensor):
            to_cuda = _is_fake(args[0])  # the result lives where `self` does
        else:
            to_cuda = bool(fake)
        if to_cuda:
            return pytree.tree_map_only(torch.Tensor, _as_fake, out)
        if fake:  # a copy off the GPU is plain, and never shares memory with the GPU tensor
            storages = {f.untyped_storage().data_ptr() for f in fake}

            def plain(t: torch.Tensor) -> torch.Tensor:
                t = t.as_subclass(torch.Tensor) if _is_fake(t) else t
                return t.clone() if t.numel() and t.untyped_storage().data_ptr() in storages else t

            return pytree.tree_map_only(torch.Tensor, plain, out)
        return out


def _check_same_device(name: str, args: tuple, kwargs: dict, tensors: list[torch.Tensor]) -> None:
    """Raise as CUDA does for an operation that mixes a (fake) CUDA tensor with a CPU tensor."""
    if name == "copy_":
        return
    if name in _INDEX_ARG:
        index = kwargs.get("index", args[_INDEX_ARG[name]] if len(args) > _INDEX_ARG[name] else None)
        if not _is_fake(args[0]) and any(_is_fake(x) for x in pytree.tree_leaves(index)):
            raise RuntimeError(
                "indices should be either on cpu or on the same device as the indexed tensor (cpu)"
            )
        return
    if any(not _is_fake(t) and t.dim() > 0 for t in tensors):
        raise RuntimeError(
            "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!"
        )


@contextmanager
def fake_cuda() -> Iterator[None]:
    """Run a block with FakeCudaTensors playing CUDA tensors."""
    with _FakeCudaMode():
        yield
