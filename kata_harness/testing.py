"""Helpers the graders share: close-enough checks that teach, and a recorder of the torch calls code makes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch.overrides import TorchFunctionMode, resolve_name


def assert_close(
    actual: Any,
    expected: Any,
    *,
    rtol: float,
    atol: float,
    what: str,
    likely_cause: str = "",
    check_dtype: bool = True,
) -> None:
    """torch.testing.assert_close with a message that says what was compared and what usually goes wrong."""

    def message(generated: str) -> str:
        mismatch = _dtype_or_shape_mismatch(actual, expected)  # the likelier root cause: say it first
        first = f"{mismatch}, and values differ" if mismatch else "values differ"
        text = f"{what}: {first} from the reference (rtol={rtol}, atol={atol}).\n{generated}"
        return f"{text}\nLikely cause: {likely_cause}" if likely_cause else text

    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, check_dtype=check_dtype, msg=message)


def assert_same_parameters(
    actual: torch.nn.Module,
    expected: torch.nn.Module,
    what: str,
    likely_cause: str,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> None:
    """assert_close on each pair of parameters, in order; the message names the parameter after `what`."""
    pairs = zip(actual.named_parameters(), expected.parameters(), strict=True)
    for (name, a), b in pairs:
        assert_close(
            a.detach(),
            b.detach(),
            rtol=rtol,
            atol=atol,
            what=f"{what}, parameter {name!r}",
            likely_cause=likely_cause,
        )


def _dtype_or_shape_mismatch(actual: Any, expected: Any) -> str:
    """ "dtype is torch.float16, expected torch.float32" where two tensors differ in dtype or shape."""
    if not (isinstance(actual, torch.Tensor) and isinstance(expected, torch.Tensor)):
        return ""
    if actual.shape != expected.shape:
        return f"shape is {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    if actual.dtype != expected.dtype:
        return f"dtype is {actual.dtype}, expected {expected.dtype}"
    return ""


T = TypeVar("T")


def explain_crash(call: Callable[[], T], what: str, likely_cause: str) -> T:
    """call(); an exception other than NotImplementedError becomes an AssertionError that explains it."""
    try:
        return call()
    except NotImplementedError:  # the harness reports a stub as "not started"
        raise
    except Exception as exc:
        raise AssertionError(
            f"{what} raised {type(exc).__name__}: {exc}; likely cause: {likely_cause}"
        ) from exc


class _CallRecorder(TorchFunctionMode):
    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.calls.append(resolve_name(func) or getattr(func, "__qualname__", repr(func)))
        return func(*args, **(kwargs or {}))


@contextmanager
def record_torch_calls() -> Iterator[list[str]]:
    """Record the name of every torch function and Tensor method called inside the block.

    Names look like "torch.sigmoid", "torch.Tensor.add" or "torch.nn.functional.silu" (as
    `torch.overrides.resolve_name` spells them). Python operators show up as their Tensor dunders,
    e.g. "torch.Tensor.__mul__".
    """
    calls: list[str] = []
    with _CallRecorder(calls):
        yield calls


class _GraphRecorder(TorchFunctionMode):
    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for result in out if isinstance(out, tuple | list) else (out,):
            if isinstance(result, torch.Tensor) and result.grad_fn is not None:
                self.calls.append(resolve_name(func) or getattr(func, "__qualname__", repr(func)))
        return out


@contextmanager
def record_graph_calls() -> Iterator[list[str]]:
    """Record the name of every torch call inside the block whose result autograd recorded (has a grad_fn):
    empty when the block built no graph, whatever it detached afterwards."""
    calls: list[str] = []
    with _GraphRecorder(calls):
        yield calls
