"""pytest-cuda-marker: the marker, the --cuda policy (and $PYTEST_CUDA), the device fixture, the header."""

import pytest
import torch

PLUGIN = ("-p", "kata_harness.cuda_marker")

CUDA_TEST = """
import pytest

@pytest.mark.cuda
def test_on_gpu():
    pass

def test_on_cpu():
    pass
"""


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU 9000")


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*PLUGIN, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.cuda: the test needs a CUDA GPU*"])


def test_auto_skips_cuda_tests_without_a_gpu(pytester: pytest.Pytester, no_gpu: None) -> None:
    pytester.makepyfile(CUDA_TEST)
    result = pytester.runpytest(*PLUGIN, "-rs", "--strict-markers")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*needs a CUDA GPU*"])


def test_auto_runs_cuda_tests_with_a_gpu(pytester: pytest.Pytester, fake_gpu: None) -> None:
    pytester.makepyfile(CUDA_TEST)
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=2)


def test_require_fails_without_a_gpu(pytester: pytest.Pytester, no_gpu: None) -> None:
    pytester.makepyfile(CUDA_TEST)
    result = pytester.runpytest(*PLUGIN, "--cuda=require")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*--cuda=require, but torch.cuda.is_available() is False*"])


def test_require_passes_with_a_gpu(pytester: pytest.Pytester, fake_gpu: None) -> None:
    pytester.makepyfile(CUDA_TEST)
    pytester.runpytest(*PLUGIN, "--cuda=require").assert_outcomes(passed=2)


def test_skip_skips_even_with_a_gpu(pytester: pytest.Pytester, fake_gpu: None) -> None:
    pytester.makepyfile(CUDA_TEST)
    pytester.runpytest(*PLUGIN, "--cuda=skip").assert_outcomes(passed=1, skipped=1)


def test_policy_comes_from_the_environment(
    pytester: pytest.Pytester, no_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(CUDA_TEST)
    monkeypatch.setenv("PYTEST_CUDA", "require")
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1, errors=1)
    pytester.runpytest(*PLUGIN, "--cuda=auto").assert_outcomes(passed=1, skipped=1)


def test_bad_environment_value_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(CUDA_TEST)
    monkeypatch.setenv("PYTEST_CUDA", "always")
    result = pytester.runpytest(*PLUGIN)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*PYTEST_CUDA='always' is not one of auto, require, skip*"])


def test_device_fixture_covers_cpu_and_cuda(pytester: pytest.Pytester, no_gpu: None) -> None:
    pytester.makepyfile(
        """
        import torch

        def test_device(device):
            assert isinstance(device, torch.device)
            assert device.type in ("cpu", "cuda")
        """
    )
    result = pytester.runpytest(*PLUGIN, "-v", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines_random(["*test_device?cpu? PASSED*", "*test_device?cuda? SKIPPED*"])


def test_header_says_whether_cuda_was_found(pytester: pytest.Pytester, fake_gpu: None) -> None:
    pytester.makepyfile(CUDA_TEST)
    result = pytester.runpytest(*PLUGIN)
    result.stdout.fnmatch_lines(["cuda: available, 1 device(s), GPU 0 is Fake GPU 9000 (--cuda=auto)"])


def test_header_without_cuda(pytester: pytest.Pytester, no_gpu: None) -> None:
    pytester.makepyfile(CUDA_TEST)
    result = pytester.runpytest(*PLUGIN, "--cuda=skip")
    result.stdout.fnmatch_lines(["cuda: not available (--cuda=skip)"])
