"""Inner pytest runs (pytester), and a fake torch whose CUDA answers are invented, its calls logged."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import types
from collections.abc import Callable

import pytest

pytest_plugins = ["pytester"]

# pytester's in-process runs drop the modules first imported inside them, and torch cannot be imported twice
# in one process: import it (when installed) before any inner run does.
if importlib.util.find_spec("torch") is not None:
    import torch  # noqa: F401


class FakeCuda:
    """Stands for ``torch.cuda``: `gpus` names the GPUs ("{pid}" in a name: the pid of the process that asks
    for it); `calls` logs (pid, function) of every call made in this process."""

    def __init__(self, gpus: list[str], initialised: bool = False) -> None:
        self.gpus = gpus
        self.initialised = initialised
        self.calls: list[tuple[int, str]] = []
        self.name_delay = 0.0  # seconds get_device_name takes (a probe that hangs)
        self.name_error: Exception | None = None

    def _log(self, name: str) -> None:
        self.calls.append((os.getpid(), name))

    def is_available(self) -> bool:
        self._log("is_available")
        return bool(self.gpus)

    def device_count(self) -> int:
        self._log("device_count")
        return len(self.gpus)

    def get_device_name(self, device: int = 0) -> str:
        self._log("get_device_name")
        time.sleep(self.name_delay)
        if self.name_error is not None:
            raise self.name_error
        return self.gpus[device].format(pid=os.getpid())

    def is_initialized(self) -> bool:  # torch's own flag: asking it initialises nothing
        return self.initialised


class FakeDevice:
    def __init__(self, type: str) -> None:
        self.type = type


FakeTorch = Callable[..., FakeCuda]


@pytest.fixture(autouse=True)
def _no_plugin_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner runs load this plugin alone (``-p pytest_cuda_marker``), not every plugin installed beside it:
    another plugin (hypothesis, pytest-randomly) would slow each run down or change its outcome."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("PYTEST_CUDA", raising=False)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> FakeTorch:
    """``fake_torch(["Fake GPU 9000"])`` puts a torch with that GPU in sys.modules; ``fake_torch([])``, one
    without a GPU. Returns its ``cuda``, whose ``calls`` says what was asked in this process."""

    def install(gpus: list[str], initialised: bool = False) -> FakeCuda:
        cuda = FakeCuda(gpus, initialised)
        module = types.ModuleType("torch")
        module.cuda = cuda  # type: ignore[attr-defined]
        module.device = FakeDevice  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "torch", module)
        return cuda

    return install


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch is not installed: ``import torch`` raises ImportError."""
    monkeypatch.setitem(sys.modules, "torch", None)
