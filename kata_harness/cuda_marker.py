"""pytest-cuda-marker: a `cuda` marker, a `--cuda` policy and a cpu/cuda `device` fixture.

Options
-------
``--cuda=auto|require|skip`` (default from ``$PYTEST_CUDA``, else ``auto``):

- ``auto``: tests marked ``cuda`` run when ``torch.cuda.is_available()``, else they are skipped
  with the reason "needs a CUDA GPU".
- ``require``: a missing GPU fails every ``cuda`` test instead of skipping it, so a broken GPU
  pass-through (say, in a devcontainer) is loud, not silent.
- ``skip``: ``cuda`` tests are skipped even where a GPU exists.

Fixture
-------
``device``: a ``torch.device``, parametrized over ``cpu`` and ``cuda``; the ``cuda`` case carries the
``cuda`` marker, so one test body checks both.

Register it with ``-p kata_harness.cuda_marker`` or ``pytest_plugins``. The report header says whether
CUDA was found, and which GPU.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch

CHOICES = ("auto", "require", "skip")
ENV_VAR = "PYTEST_CUDA"
SKIP_REASON = "needs a CUDA GPU"


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


def find_gpu() -> str | None:
    """A description of the CUDA GPU(s) torch can use now, or None."""
    import torch  # imported late: registering the plugin should not cost a torch import

    if not torch.cuda.is_available():
        return None
    return f"{torch.cuda.device_count()} device(s), GPU 0 is {torch.cuda.get_device_name(0)}"


_policy_key = pytest.StashKey[str]()
_gpu_key = pytest.StashKey["str | None"]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cuda: the test needs a CUDA GPU (see --cuda)")
    config.stash[_policy_key] = cuda_policy(config)
    config.stash[_gpu_key] = find_gpu()


def pytest_report_header(config: pytest.Config) -> str:
    policy, gpu = config.stash[_policy_key], config.stash[_gpu_key]
    return f"cuda: available, {gpu} (--cuda={policy})" if gpu else f"cuda: not available (--cuda={policy})"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("cuda") is None:
        return
    policy = item.config.stash[_policy_key]
    if policy == "skip":
        pytest.skip("cuda tests skipped by --cuda=skip")
    if item.config.stash[_gpu_key] is None:
        if policy == "require":
            pytest.fail(
                "--cuda=require, but torch.cuda.is_available() is False: is the GPU passed through "
                "(docker --gpus=all) and is this torch build a CUDA one?",
                pytrace=False,
            )
        pytest.skip(SKIP_REASON)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device a test runs on: cpu, and cuda where a GPU is available."""
    import torch

    return torch.device(request.param)
