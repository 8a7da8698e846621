"""pytest-cuda-marker: a ``cuda`` marker, a ``--cuda`` policy and a cpu/cuda ``device`` fixture.

Installing the package registers the plugin: a ``pytest11`` entry point named after the module, so
``-p pytest_cuda_marker`` and ``pytest_plugins = ["pytest_cuda_marker"]`` are harmless repeats (and what
``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` needs); ``-p no:pytest_cuda_marker`` disables it.

Options
-------
``--cuda=auto|require|skip`` (default from ``$PYTEST_CUDA``, else ``auto``; the command line wins):

- ``auto``: tests marked ``cuda`` run when ``torch.cuda.is_available()``, else they are skipped with the
  reason "needs a CUDA GPU" ("needs a CUDA GPU (torch is not installed)" without torch, "needs a CUDA GPU
  (torch failed to import: ...)" where importing it fails).
- ``require``: a missing GPU (or a missing or broken torch) fails every ``cuda`` test instead of skipping
  it, so a broken GPU pass-through (say, in a devcontainer) is loud, not silent.
- ``skip``: ``cuda`` tests are skipped even where a GPU exists.

Any other value of ``$PYTEST_CUDA`` is a usage error.

Fixture
-------
``device``: a ``torch.device``, parametrized over ``cpu`` and ``cuda``; the ``cuda`` case carries the
``cuda`` marker, so one test body checks both.

Report header
-------------
One line: ``cuda: available, N device(s), GPU 0 is NAME (--cuda=auto)``, ``cuda: not available
(--cuda=auto)`` (``cuda: not available, torch is not installed ...`` without torch), or ``cuda: unknown, ...``
where asking torch failed.

Fork safety
-----------
The plugin never initialises CUDA in the pytest process, so that process can still fork children that use
CUDA (a harness that runs each test module in a forked worker, a test that forks). torch is imported
lazily and is not a dependency:

- whether a GPU is usable is decided at the setup of the first ``cuda`` test, in the process that runs
  it, and cached for that process;
- the report header asks torch in a short-lived forked child on Linux (the child writes the answer to a
  pipe and exits); where fork is unsafe or missing (macOS, Windows), or torch has already initialised
  CUDA in this process, it asks torch directly.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    import torch

__all__ = ["CHOICES", "ENV_VAR", "SKIP_REASON", "cuda_policy", "describe_gpu", "device"]

CHOICES = ("auto", "require", "skip")
ENV_VAR = "PYTEST_CUDA"
SKIP_REASON = "needs a CUDA GPU"
NO_TORCH = "torch is not installed"
NOT_AVAILABLE = "torch.cuda.is_available() is False"
PROBE_TIMEOUT = 60.0  # seconds the header's forked probe may take (importing torch, initialising CUDA)

# Why torch is never asked about CUDA in the pytest process: torch.cuda.is_available()'s documentation says
# "This function will NOT poison fork if the environment variable PYTORCH_NVML_BASED_CUDA_CHECK=1 is set"
# (https://docs.pytorch.org/docs/stable/generated/torch.cuda.is_available.html, "Poison fork in
# multiprocessing"), and torch.cuda.device_count()'s that it "will NOT poison fork if NVML discovery
# succeeds". Without that variable, is_available() calls cudaGetDeviceCount, which initialises the CUDA driver
# (cuInit, as the comment in its source says), and get_device_name() always initialises CUDA: a process that
# did either cannot fork children that use CUDA. A plugin cannot count on that variable (nor on NVML), so it
# asks where the answer is needed: in the process that runs the CUDA test, and in a child for the header.

_policy_key = pytest.StashKey[str]()
# (pid, reason): the process that decided, and why CUDA tests cannot run there (None: they can).
_unavailable_key = pytest.StashKey["tuple[int, str | None]"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cuda", "CUDA marker")
    group.addoption(
        "--cuda",
        choices=CHOICES,
        default=None,
        help=f"what to do with tests marked cuda: auto (run if a GPU exists, else skip), require (fail "
        f"without a GPU) or skip. Default: ${ENV_VAR}, else auto.",
    )


def cuda_policy(config: pytest.Config) -> str:
    """The policy in force: the command line wins over the environment, which wins over "auto"."""
    policy = config.getoption("cuda") or os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if policy not in CHOICES:
        raise pytest.UsageError(f"${ENV_VAR}={policy!r} is not one of {', '.join(CHOICES)}")
    return policy


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: the test needs a CUDA GPU (see --cuda)")
    config.stash[_policy_key] = cuda_policy(config)  # no torch here: configuring must not touch CUDA


def _import_torch() -> tuple[ModuleType | None, str]:
    """(torch, "") or (None, why it cannot be imported). Importing torch does not initialise CUDA."""
    try:
        import torch
    except ModuleNotFoundError as error:
        if error.name != "torch":
            return None, f"torch failed to import: {type(error).__name__}: {error}"
        return None, NO_TORCH
    except Exception as error:  # a broken install: a missing CUDA library, an incompatible numpy
        return None, f"torch failed to import: {type(error).__name__}: {error}"
    return torch, ""


def _unavailable_reason() -> str | None:
    """Why a GPU cannot be used in this process (None: it can). Initialises CUDA: call it where tests run."""
    torch, why_not = _import_torch()
    if torch is None:
        return why_not
    return None if torch.cuda.is_available() else NOT_AVAILABLE


def describe_gpu() -> str:
    """What torch says of CUDA here: "available, 1 device(s), GPU 0 is NAME", or "not available" (and why,
    when torch cannot be imported). Initialises CUDA where there is a GPU: the header asks it in a child."""
    torch, why_not = _import_torch()
    if torch is None:
        return f"not available, {why_not}"
    if not torch.cuda.is_available():
        return "not available"
    return f"available, {torch.cuda.device_count()} device(s), GPU 0 is {torch.cuda.get_device_name(0)}"


def _fork_is_safe() -> bool:
    return hasattr(os, "fork") and sys.platform.startswith("linux")  # macOS frameworks are not fork-safe


def _cuda_initialised_here(torch: ModuleType) -> bool:
    """Whether torch has already initialised CUDA in this process: a forked child could not use it then."""
    return bool(torch.cuda.is_initialized())


def _ask_torch() -> str:
    try:
        return describe_gpu()
    except Exception as error:  # a broken driver, a broken torch install
        return f"unknown, the probe failed: {type(error).__name__}: {error}"


def _probe() -> str:
    """``describe_gpu()``, asked in a forked child where that is possible, so this process stays CUDA-free."""
    # Importing torch does not initialise CUDA ("It is lazily initialized, so you can always import it",
    # torch.cuda's docstring). Importing it here rather than in the child saves a second import, often
    # seconds, where the tests import torch anyway.
    torch, why_not = _import_torch()
    if torch is None:
        return f"not available, {why_not}"
    if not _fork_is_safe() or _cuda_initialised_here(torch):
        return _ask_torch()
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns on forking a process that has threads (torch's). The child only asks torch
        # and leaves through os._exit; a deadlock there costs PROBE_TIMEOUT, not the run.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(read_fd)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)  # torch's warnings (no driver, old driver) are not the header's business
            os.dup2(devnull, 2)
            warnings.simplefilter("ignore")
            data = _ask_torch().encode()
            while data:
                data = data[os.write(write_fd, data) :]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    return _read_answer(pid, read_fd)


def _read_answer(pid: int, read_fd: int) -> str:
    """The parent's side of ``_probe``: read the child's answer, killing it after PROBE_TIMEOUT; reap it."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + PROBE_TIMEOUT
    finished = False
    try:
        while not finished and (left := deadline - time.monotonic()) > 0:
            if not select.select([read_fd], [], [], left)[0]:
                break
            chunk = os.read(read_fd, 65536)
            chunks.append(chunk)
            finished = not chunk  # end of file: the child is done
    finally:
        os.close(read_fd)
        if not finished:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if not finished:
        return f"unknown, the probe took over {PROBE_TIMEOUT:g} s"
    return b"".join(chunks).decode(errors="replace") or "unknown, the probe died"


def pytest_report_header(config: pytest.Config) -> str:
    policy = config.stash[_policy_key]
    return f"cuda: {_probe()} (--cuda={policy})"


def _unavailable(config: pytest.Config) -> str | None:
    """Why CUDA tests cannot run in this process, decided at its first CUDA test and cached for it."""
    pid, reason = config.stash.get(_unavailable_key, (None, None))
    if pid != os.getpid():  # not decided yet, or decided by the process this one was forked from
        reason = _unavailable_reason()
        config.stash[_unavailable_key] = (os.getpid(), reason)
    return reason


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda") is None:
        return
    policy = item.config.stash[_policy_key]
    if policy == "skip":
        _skip("cuda tests skipped by --cuda=skip")
    reason = _unavailable(item.config)
    if reason is None:
        return
    if policy == "require":
        hint = ": is the GPU passed through (docker --gpus=all) and is this torch build a CUDA one?"
        pytest.fail(f"--cuda=require, but {reason}{hint if reason == NOT_AVAILABLE else ''}", pytrace=False)
    _skip(SKIP_REASON if reason == NOT_AVAILABLE else f"{SKIP_REASON} ({reason})")


def _skip(reason: str) -> NoReturn:
    """pytest.skip, reported at the test (as a skip marker's is) rather than at this file."""
    try:
        error = pytest.skip.Exception(reason, _use_item_location=True)  # pytest's own, for skip markers
    except TypeError:  # a pytest without it
        error = pytest.skip.Exception(reason)
    raise error


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device a test runs on: cpu, and cuda where a GPU is available."""
    import torch

    return torch.device(request.param)
