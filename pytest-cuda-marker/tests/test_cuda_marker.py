"""pytest-cuda-marker: the marker, the --cuda policy (and $PYTEST_CUDA), the device fixture, the header, and
that the pytest process itself never asks torch about CUDA."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

import pytest_cuda_marker

if TYPE_CHECKING:
    from conftest import FakeTorch

PLUGIN = ("-p", "pytest_cuda_marker")  # autoloading is off in the inner runs: see conftest.py

CUDA_TEST = """
import pytest

@pytest.mark.cuda
def test_on_gpu():
    pass

def test_on_cpu():
    pass
"""

CPU_ONLY = """
def test_on_cpu():
    pass
"""

HAS_TORCH = importlib.util.find_spec("torch") is not None


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*PLUGIN, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.cuda: the test needs a CUDA GPU*"])


# Fresh interpreters (runpytest_subprocess) that need no torch block it: importing torch can take seconds.
NO_TORCH_CONFTEST = 'import sys\n\nsys.modules["torch"] = None\n'


def test_the_entry_point_loads_the_plugin(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed, the plugin needs no -p; naming it anyway (or in pytest_plugins) is a harmless repeat."""
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    pytester.makepyfile(CUDA_TEST)
    pytester.makeconftest(NO_TORCH_CONFTEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "cuda: not available, torch is not installed (--cuda=auto)",
            "plugins:*cuda-marker-*",
            "SKIPPED * needs a CUDA GPU (torch is not installed)",
        ]
    )
    pytester.makeconftest(NO_TORCH_CONFTEST + 'pytest_plugins = ["pytest_cuda_marker"]\n')
    result = pytester.runpytest_subprocess(*PLUGIN, "-p", "no:cacheprovider", "--cuda=skip")
    result.assert_outcomes(passed=1, skipped=1)


def test_the_plugin_can_be_disabled(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    pytester.makepyfile(CPU_ONLY)
    pytester.makeconftest(NO_TORCH_CONFTEST)
    result = pytester.runpytest_subprocess("-p", "no:pytest_cuda_marker", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("cuda:*")


def test_auto_skips_cuda_tests_without_a_gpu(pytester: pytest.Pytester, fake_torch: FakeTorch) -> None:
    fake_torch([])
    pytester.makepyfile(CUDA_TEST)
    result = pytester.runpytest(*PLUGIN, "-rs", "--strict-markers")
    result.assert_outcomes(passed=1, skipped=1)
    # Reported at the test, as a skip marker's reason is, not at the plugin's line.
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]1[]] test_auto_skips_cuda_tests_without_a_gpu.py:3: needs a CUDA GPU"]
    )


def test_auto_runs_cuda_tests_with_a_gpu(pytester: pytest.Pytester, fake_torch: FakeTorch) -> None:
    fake_torch(["Fake GPU 9000"])
    pytester.makepyfile(CUDA_TEST)
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=2)


def test_require_fails_without_a_gpu(pytester: pytest.Pytester, fake_torch: FakeTorch) -> None:
    fake_torch([])
    pytester.makepyfile(CUDA_TEST)
    result = pytester.runpytest(*PLUGIN, "--cuda=require")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*--cuda=require, but torch.cuda.is_available() is False*"])


def test_require_passes_with_a_gpu(pytester: pytest.Pytester, fake_torch: FakeTorch) -> None:
    fake_torch(["Fake GPU 9000"])
    pytester.makepyfile(CUDA_TEST)
    pytester.runpytest(*PLUGIN, "--cuda=require").assert_outcomes(passed=2)


def test_skip_skips_even_with_a_gpu(pytester: pytest.Pytester, fake_torch: FakeTorch) -> None:
    cuda = fake_torch(["Fake GPU 9000"])
    pytester.makepyfile(CUDA_TEST)
    result = pytester.runpytest(*PLUGIN, "--cuda=skip", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * cuda tests skipped by --cuda=skip"])
    assert cuda.calls == []  # nothing to decide: torch was not asked


def test_policy_comes_from_the_environment(
    pytester: pytest.Pytester, fake_torch: FakeTorch, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_torch([])
    pytester.makepyfile(CUDA_TEST)
    monkeypatch.setenv("PYTEST_CUDA", " Require ")
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1, errors=1)
    pytester.runpytest(*PLUGIN, "--cuda=auto").assert_outcomes(passed=1, skipped=1)  # the command line wins
    monkeypatch.setenv("PYTEST_CUDA", "skip")
    result = pytester.runpytest(*PLUGIN, "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*skipped by --cuda=skip*"])


def test_bad_environment_value_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(CUDA_TEST)
    monkeypatch.setenv("PYTEST_CUDA", "always")
    result = pytester.runpytest(*PLUGIN)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*PYTEST_CUDA='always' is not one of auto, require, skip*"])


def test_bad_option_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*PLUGIN, "--cuda=always")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--cuda: invalid choice: 'always'*"])


def test_device_fixture_covers_cpu_and_cuda(pytester: pytest.Pytester, fake_torch: FakeTorch) -> None:
    fake_torch([])
    pytester.makepyfile(
        """
        def test_device(device):
            assert device.type in ("cpu", "cuda")
        """
    )
    result = pytester.runpytest(*PLUGIN, "-v", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines_random(["*test_device?cpu? PASSED*", "*test_device?cuda? SKIPPED*"])


def test_device_fixture_runs_on_a_gpu(pytester: pytest.Pytester, fake_torch: FakeTorch) -> None:
    fake_torch(["Fake GPU 9000"])
    pytester.makepyfile(
        """
        seen = []

        def test_device(device):
            seen.append(device.type)

        def test_both_ran():
            assert seen == ["cpu", "cuda"]
        """
    )
    pytester.runpytest(*PLUGIN, "--cuda=require").assert_outcomes(passed=3)


def test_header_says_whether_cuda_was_found(pytester: pytest.Pytester, fake_torch: FakeTorch) -> None:
    fake_torch(["Fake GPU 9000", "Fake GPU 9001"])
    pytester.makepyfile(CUDA_TEST)
    result = pytester.runpytest(*PLUGIN)
    result.stdout.fnmatch_lines(["cuda: available, 2 device(s), GPU 0 is Fake GPU 9000 (--cuda=auto)"])


def test_header_without_cuda(pytester: pytest.Pytester, fake_torch: FakeTorch) -> None:
    fake_torch([])
    pytester.makepyfile(CUDA_TEST)
    result = pytester.runpytest(*PLUGIN, "--cuda=skip")
    result.stdout.fnmatch_lines(["cuda: not available (--cuda=skip)"])


def test_no_header_no_probe(
    pytester: pytest.Pytester, fake_torch: FakeTorch, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_torch(["Fake GPU 9000"])
    probes: list[int] = []
    monkeypatch.setattr(pytest_cuda_marker, "_probe", lambda: probes.append(1) or "probed")
    pytester.makepyfile(CPU_ONLY)
    result = pytester.runpytest(*PLUGIN, "--no-header")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("cuda:*")
    assert probes == []


# --- the pytest process never initialises CUDA ----------------------------------------------------------


def test_the_header_asks_torch_in_another_process(pytester: pytest.Pytester, fake_torch: FakeTorch) -> None:
    cuda = fake_torch(["Fake GPU 9000"])
    pytester.makepyfile(CPU_ONLY)
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["cuda: available, 1 device(s), GPU 0 is Fake GPU 9000 (--cuda=auto)"])
    assert cuda.calls == []  # configure, the header and a cpu test: torch.cuda never asked in this process


def test_the_probe_is_a_child_of_the_pytest_process(pytester: pytest.Pytester, fake_torch: FakeTorch) -> None:
    fake_torch(["GPU of pid {pid}"])
    pytester.makepyfile(CPU_ONLY)
    result = pytester.runpytest(*PLUGIN)
    header = next(line for line in result.outlines if line.startswith("cuda: available"))
    asker = int(header.split("GPU of pid ")[1].split()[0])
    assert asker != os.getpid()
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(asker, os.WNOHANG)


def test_availability_is_decided_at_the_first_cuda_test_once(
    pytester: pytest.Pytester, fake_torch: FakeTorch
) -> None:
    cuda = fake_torch(["Fake GPU 9000"])
    pytester.makepyfile(
        """
        import pytest

        def test_cpu_first():
            import torch
            assert torch.cuda.calls == []  # configure, collection and the header asked nothing here

        @pytest.mark.cuda
        def test_gpu_1():
            pass

        @pytest.mark.cuda
        def test_gpu_2():
            pass
        """
    )
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=3)
    assert [name for _, name in cuda.calls] == ["is_available"]  # once, at test_gpu_1's setup


def test_a_forked_process_decides_again(pytester: pytest.Pytester, fake_torch: FakeTorch) -> None:
    """A decision is cached per process: one inherited from the parent (pid differs) is not reused."""
    cuda = fake_torch(["Fake GPU 9000"])
    config = pytester.parseconfigure(*PLUGIN)
    config.stash[pytest_cuda_marker._unavailable_key] = (os.getpid() + 1, "stale: the parent's answer")
    assert pytest_cuda_marker._unavailable(config) is None
    assert pytest_cuda_marker._unavailable(config) is None
    assert config.stash[pytest_cuda_marker._unavailable_key] == (os.getpid(), None)
    assert [name for _, name in cuda.calls] == ["is_available"]


def test_without_fork_the_header_asks_torch_here(
    pytester: pytest.Pytester, fake_torch: FakeTorch, monkeypatch: pytest.MonkeyPatch
) -> None:
    cuda = fake_torch(["Fake GPU 9000"])
    monkeypatch.setattr(pytest_cuda_marker, "_fork_is_safe", lambda: False)  # macOS, Windows
    pytester.makepyfile(CPU_ONLY)
    result = pytester.runpytest(*PLUGIN)
    result.stdout.fnmatch_lines(["cuda: available, 1 device(s), GPU 0 is Fake GPU 9000 (--cuda=auto)"])
    assert {pid for pid, _ in cuda.calls} == {os.getpid()}


def test_where_cuda_is_initialised_already_the_header_asks_torch_here(
    pytester: pytest.Pytester, fake_torch: FakeTorch
) -> None:
    cuda = fake_torch(["Fake GPU 9000"], initialised=True)  # a forked child could not use CUDA any more
    pytester.makepyfile(CPU_ONLY)
    result = pytester.runpytest(*PLUGIN)
    result.stdout.fnmatch_lines(["cuda: available, 1 device(s), GPU 0 is Fake GPU 9000 (--cuda=auto)"])
    assert "get_device_name" in [name for _, name in cuda.calls]


def test_a_probe_that_hangs_is_killed(
    pytester: pytest.Pytester, fake_torch: FakeTorch, monkeypatch: pytest.MonkeyPatch
) -> None:
    cuda = fake_torch(["Fake GPU 9000"])
    cuda.name_delay = 60
    monkeypatch.setattr(pytest_cuda_marker, "PROBE_TIMEOUT", 0.5)
    pytester.makepyfile(CPU_ONLY)
    start = time.monotonic()
    result = pytester.runpytest(*PLUGIN)
    assert time.monotonic() - start < 30
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["cuda: unknown, the probe took over 0.5 s (--cuda=auto)"])


def test_a_probe_that_fails_says_why(pytester: pytest.Pytester, fake_torch: FakeTorch) -> None:
    cuda = fake_torch(["Fake GPU 9000"])
    cuda.name_error = RuntimeError("CUDA driver version is insufficient")
    pytester.makepyfile(CPU_ONLY)
    result = pytester.runpytest(*PLUGIN)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["cuda: unknown, the probe failed: RuntimeError: CUDA driver version is insufficient (--cuda=auto)"]
    )


# --- without torch --------------------------------------------------------------------------------------


def test_without_torch_cuda_tests_are_skipped(pytester: pytest.Pytester, no_torch: None) -> None:
    pytester.makepyfile(CUDA_TEST)
    result = pytester.runpytest(*PLUGIN, "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        ["cuda: not available, torch is not installed (--cuda=auto)", "SKIPPED * needs a CUDA GPU (torch*"]
    )


def test_without_torch_require_fails(pytester: pytest.Pytester, no_torch: None) -> None:
    pytester.makepyfile(CUDA_TEST)
    result = pytester.runpytest(*PLUGIN, "--cuda=require")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*--cuda=require, but torch is not installed*"])


def test_a_broken_torch_is_reported(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    pytester.makepyfile(torch="raise OSError('libcudart.so.12: cannot open shared object file')")
    pytester.syspathinsert()
    pytester.makepyfile(test_it=CUDA_TEST)
    result = pytester.runpytest(*PLUGIN, "-rs", "test_it.py")
    result.assert_outcomes(passed=1, skipped=1)
    broken = "torch failed to import: OSError: libcudart.so.12: cannot open shared object file"
    result.stdout.fnmatch_lines([f"cuda: not available, {broken} (--cuda=auto)", f"SKIPPED * ({broken})"])
    result = pytester.runpytest(*PLUGIN, "--cuda=require", "test_it.py")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"*--cuda=require, but {broken}"])


# --- real torch -----------------------------------------------------------------------------------------


@functools.cache
def _real_gpu() -> bool:
    """Whether real torch sees a GPU, asked in a fresh interpreter so that this one stays CUDA-free."""
    if not HAS_TORCH:
        return False
    code = "import torch; print(torch.cuda.is_available())"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return run.stdout.strip() == "True"


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_real_torch_header_and_device(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import torch

        def test_device(device):
            assert isinstance(device, torch.device)
        """
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-p", "no:cacheprovider", "-v")
    gpu = _real_gpu()
    result.assert_outcomes(passed=2 if gpu else 1, skipped=0 if gpu else 1)
    result.stdout.fnmatch_lines(
        ["cuda: available, * (--cuda=auto)" if gpu else "cuda: not available (--cuda=auto)"]
    )


@pytest.mark.skipif(not _real_gpu(), reason="needs a CUDA GPU")
def test_real_gpu_a_fork_after_the_header_can_use_cuda(pytester: pytest.Pytester) -> None:
    """The harness's case: after the header, the pytest process forks a child that uses CUDA."""
    pytester.makepyfile(
        """
        import os

        import pytest
        import torch

        def test_fork_uses_cuda():
            assert not torch.cuda.is_initialized()
            pid = os.fork()
            if pid == 0:  # the child: leaves through os._exit whatever happens
                code = 1
                try:
                    code = 0 if torch.ones(2, device="cuda").sum().item() == 2.0 else 1
                finally:
                    os._exit(code)
            assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0

        @pytest.mark.cuda
        def test_then_cuda_here():
            assert torch.ones(1, device="cuda").item() == 1.0
        """
    )
    result = pytester.runpytest_subprocess(*PLUGIN, "-p", "no:cacheprovider", "--cuda=require")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["cuda: available, * (--cuda=require)"])
