"""One kata's mishap never hangs the run, fakes a "done", or decides another kata's grade.

Every mishap below is graded in one run beside a correct kata (k99_witness), which must stay green.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kata_harness.source import REPO_ROOT
from kata_harness.tests.inner_run import PLUGINS, assert_lines, grade, write_katas

pytestmark = pytest.mark.timeout(300)

WITNESS_TESTS = """
import torch
from kata_harness.testing import assert_close

def test_value():
    assert_close(kata.double(torch.ones(3)), torch.full((3,), 2.0), rtol=0, atol=0, what="double")

def test_wrong_values_still_fail_here():
    # patched assert_close elsewhere must not turn this red test green
    import pytest
    with pytest.raises(AssertionError):
        torch.testing.assert_close(torch.ones(1), torch.zeros(1))
    with pytest.raises(AssertionError):
        assert_close(torch.ones(1), torch.zeros(1), rtol=0, atol=0, what="x")

def test_state_is_default():
    import sys
    assert torch.get_default_dtype() == torch.float32
    assert not torch.is_autocast_enabled("cpu")
    assert torch._C._len_torch_function_stack() == 0
    assert sys.getrecursionlimit() >= 1000
"""

ONE_TEST = "def test_f():\n    assert kata.f() == 1\n\ndef test_g():\n    assert kata.g() == 1\n"

MISHAPS: dict[str, tuple[str, str]] = {
    "k70_hypothesis_loop": (
        "def f(x):\n    while True:\n        pass\n",
        "from hypothesis import given, strategies as st\n\n@given(st.integers())\n"
        "def test_f(x):\n    kata.f(x)\n\ndef test_other():\n    assert 1 == 1\n",
    ),
    "k71_import_loop": ("while True:\n    pass\n\ndef f():\n    return 1\n", ONE_TEST),
    # A native op that never hands control back to Python, so the alarm's handler cannot run: played
    # deterministically by a sleep with SIGALRM blocked (a real long op depends on the machine's speed).
    "k72_long_native_op": (
        "import signal, time\n\ndef f():\n    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\n"
        "    time.sleep(60)\n    return 1\n\ndef g():\n    return 1\n",
        ONE_TEST,
    ),
    "k73_exit_in_function": ("import os\n\ndef f():\n    os._exit(0)\n\ndef g():\n    return 1\n", ONE_TEST),
    "k74_sys_exit_at_import": ("import sys\n\nsys.exit()\n\ndef f():\n    return 1\n", ONE_TEST),
    "k75_segfault": (
        "import ctypes\n\ndef f():\n    ctypes.string_at(0)\n\ndef g():\n    return 1\n",
        ONE_TEST,
    ),
    "k76_keyboard_interrupt": ("def f():\n    raise KeyboardInterrupt\n\ndef g():\n    return 1\n", ONE_TEST),
    "k77_thread_and_child_left_running": (
        "import os, subprocess, threading, time\n\ndef f():\n"
        "    threading.Thread(target=lambda: time.sleep(10**6)).start()\n"
        "    child = subprocess.Popen(['sleep', '1000'])\n"
        "    open(os.environ['CHILD_PID_FILE'], 'w').write(str(child.pid))\n    return 1\n\n"
        "def g():\n    return 1\n",
        ONE_TEST,
    ),
    "k78_global_state_at_import": (
        "import sys, torch, torch.testing\nfrom torch.overrides import TorchFunctionMode\n"
        "import kata_harness.testing\n\n"
        "torch.autocast('cpu').__enter__()\nTorchFunctionMode().__enter__()\ntorch.set_flush_denormal(True)\n"
        "sys.setrecursionlimit(120)\ntorch.testing.assert_close = lambda *a, **k: None\n"
        "kata_harness.testing.assert_close = lambda *a, **k: None\nos = __import__('os')\n"
        "os.environ['KATA_SOURCE'] = '/nowhere'\n\ndef f():\n    return 1\n\ndef g():\n    return 1\n",
        ONE_TEST,
    ),
    "k79_skips_itself": (
        "import pytest\n\ndef f():\n    pytest.skip('later')\n\ndef g():\n    return 1\n",
        ONE_TEST,
    ),
    "k80_torch_not_implemented": (
        "import torch\n\nclass Twice(torch.autograd.Function):\n    @staticmethod\n"
        "    def forward(ctx, x):\n        return 2 * x\n\n    @staticmethod\n"
        "    def backwards(ctx, g):\n        return 2 * g\n\n"
        "def f():\n    x = torch.ones(2, requires_grad=True)\n"
        "    Twice.apply(x).sum().backward()\n    return 1\n\n"
        "def g():\n    raise NotImplementedError\n",
        ONE_TEST,
    ),
    "k81_huge_print": (
        "def f():\n    print('x' * 10_000_000)\n    return 0\n\ndef g():\n    return 1\n",
        ONE_TEST,
    ),
    "k82_global_hook": (
        "import torch\n\ndef f():\n"
        "    torch.nn.modules.module.register_module_forward_hook(lambda *a: None)\n"
        "    return 1\n\ndef g():\n    return 1\n",
        ONE_TEST,
    ),
    "k83_exit_at_import": ("import os\n\nos._exit(0)\n", ONE_TEST + "\ndef test_h():\n    kata.h\n"),
    "k86_warns": (
        "import warnings\n\ndef f():\n    warnings.warn('careful')\n    return 1\n\ndef g():\n    return 1\n",
        ONE_TEST,
    ),
    "k99_witness": ("def double(x):\n    return 2 * x\n", WITNESS_TESTS),
}


@pytest.fixture(scope="module")
def mishaps(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[tuple[str, str], dict], Path]:
    folder = tmp_path_factory.mktemp("mishaps")
    write_katas(folder, MISHAPS)
    (folder / "learner" / "k84_bom.py").write_bytes("\ufeffdef f():\n    return 1\n".encode())
    (folder / "test_k84_bom.py").write_text(
        "from kata_harness import load_kata\n\nkata = load_kata('k84_bom')\n\n"
        "def test_f():\n    assert kata.f() == 1\n"
    )
    pid_file = folder / "child.pid"
    run, records = grade(folder, "--timeout=4", env={"CHILD_PID_FILE": str(pid_file)}, timeout=240)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout, {(r["kata"], r["name"]): r for r in records}, pid_file


def outcome(records: dict, kata: str, test: str = "test_f") -> tuple[str, str]:
    record = records[(kata, test)]
    return record["outcome"], record["message"]


def test_the_correct_kata_is_graded_green_beside_every_mishap(mishaps) -> None:
    output, records, _ = mishaps
    names = ("test_value", "test_wrong_values_still_fail_here", "test_state_is_default")
    assert [outcome(records, "k99_witness", name)[0] for name in names] == ["passed"] * 3
    assert_lines(output, "*99*3/3*done*")


def test_every_mishap_kata_still_grades_its_other_tests(mishaps) -> None:
    _, records, _ = mishaps
    for kata in ("k72_long_native_op", "k73_exit_in_function", "k75_segfault", "k76_keyboard_interrupt"):
        assert outcome(records, kata, "test_g")[0] == "passed", kata
    assert outcome(records, "k70_hypothesis_loop", "test_other")[0] == "passed"


def test_an_endless_loop_under_hypothesis_stops_at_its_first_timeout(mishaps) -> None:
    _, records, _ = mishaps
    verdict, message = outcome(records, "k70_hypothesis_loop")
    assert verdict == "failed" and "timed out in `f`" in message
    assert records[("k70_hypothesis_loop", "test_f")]["duration"] < 8  # the alarm at 4 s, not the kill at 9


def test_a_loop_at_import_breaks_the_kata_in_one_line(mishaps) -> None:
    _, records, _ = mishaps
    verdict, message = outcome(records, "k71_import_loop")
    assert verdict == "broken" and "k71_import_loop.py:1" in message and "Timeout" in message
    assert outcome(records, "k71_import_loop", "test_g")[0] == "broken"


def test_a_native_op_past_the_timeout_has_its_process_stopped(mishaps) -> None:
    _, records, _ = mishaps
    verdict, message = outcome(records, "k72_long_native_op")
    assert verdict == "failed" and "timed out: still running after" in message


def test_a_process_that_exits_or_crashes_fails_only_its_test(mishaps) -> None:
    _, records, _ = mishaps
    assert "exited with code 0" in outcome(records, "k73_exit_in_function")[1]
    assert "killed by SIGSEGV" in outcome(records, "k75_segfault")[1]
    assert "raised KeyboardInterrupt" in outcome(records, "k76_keyboard_interrupt")[1]


def test_sys_exit_at_import_is_a_broken_kata(mishaps) -> None:
    _, records, _ = mishaps
    verdict, message = outcome(records, "k74_sys_exit_at_import")
    assert verdict == "broken" and "SystemExit while importing: sys.exit(None) ends the whole" in message


def test_exit_at_import_costs_three_tries_then_the_rest_is_not_graded(mishaps) -> None:
    _, records, _ = mishaps
    messages = [outcome(records, "k83_exit_at_import", name)[1] for name in ("test_f", "test_g", "test_h")]
    assert all("exited with code 0" in message for message in messages)


def test_threads_and_processes_left_running_do_not_outlive_the_kata(mishaps) -> None:
    _, records, pid_file = mishaps
    assert outcome(records, "k77_thread_and_child_left_running")[0] == "passed"
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_global_state_changed_at_import_stays_in_its_kata(mishaps) -> None:
    _, records, _ = mishaps
    assert outcome(records, "k78_global_state_at_import")[0] in ("passed", "error")


def test_a_kata_cannot_skip_its_own_grading(mishaps) -> None:
    output, records, _ = mishaps
    verdict, message = outcome(records, "k79_skips_itself")
    assert verdict == "failed" and "cannot skip its own grading" in message
    assert "79*done" not in output


def test_not_implemented_error_from_torch_is_not_a_stub(mishaps) -> None:
    _, records, _ = mishaps
    verdict, message = outcome(records, "k80_torch_not_implemented")
    assert verdict == "failed" and "torch raised NotImplementedError" in message
    assert outcome(records, "k80_torch_not_implemented", "test_g")[0] == "not started"


def test_huge_output_is_cut(mishaps) -> None:
    output, _, _ = mishaps
    assert len(output) < 500_000
    assert "more characters cut by the grader" in output


def test_global_module_hooks_are_leaked_state(mishaps) -> None:
    _, records, _ = mishaps
    verdict, message = outcome(records, "k82_global_hook")
    assert verdict == "error" and "global module hooks" in message


def test_a_utf8_bom_is_fine(mishaps) -> None:
    _, records, _ = mishaps
    assert outcome(records, "k84_bom")[0] == "passed"


def test_killing_the_command_that_started_pytest_stops_the_grading(tmp_path: Path) -> None:
    """`nox` killed (say, by the editor) must not leave pytest and a looping kata at full CPU."""
    looping = "import os\n\ndef f():\n    open(os.environ['WORKER_PID_FILE'], 'w').write(str(os.getpid()))\n"
    looping += "    while True:\n        pass\n"
    write_katas(tmp_path, {"k85_loop": (looping, "def test_f():\n    kata.f()\n")})
    worker_pid_file, pytest_pid_file = tmp_path / "worker.pid", tmp_path / "pytest.pid"
    command = [sys.executable, "-m", "pytest", *PLUGINS, "-p", "no:cacheprovider", "--timeout=120"]
    command += ["--rootdir", str(tmp_path)]
    launcher = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen({command!r}, cwd={str(tmp_path)!r})\n"
        f"open({str(pytest_pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "KATA_SOURCE": str(tmp_path / "learner"), "PYTHONPATH": str(REPO_ROOT)}
    env["WORKER_PID_FILE"] = str(worker_pid_file)
    parent = subprocess.Popen([sys.executable, "-c", launcher], env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not worker_pid_file.exists() or not worker_pid_file.read_text():
        assert time.monotonic() < deadline, "the looping kata never started"
        time.sleep(0.2)
    parent.kill()
    parent.wait()
    pids = [int(pytest_pid_file.read_text()), int(worker_pid_file.read_text())]
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "pytest or its kata worker outlived the command that started them"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (dead, not yet reaped by its parent) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_a_warning_in_a_kata_is_reported_like_any_other(mishaps) -> None:
    output, records, _ = mishaps
    assert outcome(records, "k86_warns")[0] == "passed"
    assert "INTERNALERROR" not in output
    assert_lines(output, "*warnings summary*", "*UserWarning: careful*")
