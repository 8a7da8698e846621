"""The four ways a learner breaks things each read as one clear line, and the other katas are still graded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kata_harness.source import REPO_ROOT

pytestmark = pytest.mark.timeout(180)  # the inner run starts a fresh interpreter and imports torch

PLUGINS = ("-p", "kata_harness.grading", "-p", "kata_harness.scoreboard", "-p", "pytest_cuda_marker")

LEARNER_FILES = {
    "k91_syntax": "def f(:\n    return 1\n",
    "k92_loop": "def f():\n    while True:\n        pass\n\n\ndef g():\n    return 1\n",
    "k93_leak": "import torch\n\n\ndef f():\n    torch.set_default_dtype(torch.float64)\n    return 1\n",
    "k94_stub": "def f():\n    raise NotImplementedError  # TODO\n",
    "k95_done": "def f():\n    return 1\n",
    "k96_import_error": "import torch\n\nVALUE = 1 / 0\n\n\ndef f():\n    return 1\n",
}

TESTS = {
    "k91_syntax": "def test_f():\n    assert kata.f() == 1\n\ndef test_f_again():\n    kata.f()\n",
    "k92_loop": "def test_f():\n    assert kata.f() == 1\n\ndef test_g():\n    assert kata.g() == 1\n",
    "k93_leak": (
        "import torch\n\ndef test_f():\n    assert kata.f() == 1\n\n"
        "def test_state_is_fresh_again():\n    assert torch.get_default_dtype() == torch.float32\n"
    ),
    "k94_stub": "def test_f():\n    assert kata.f() == 1\n",
    "k95_done": "def test_f():\n    assert kata.f() == 1\n\ndef test_missing_name():\n    kata.g\n",
    "k96_import_error": "def test_f():\n    assert kata.f() == 1\n",
}


Graded = tuple[str, dict[tuple[str, str], dict]]


def grade(folder: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run the harness's plugins over `folder` (learner/ + test files) in a fresh interpreter."""
    command = [sys.executable, "-m", "pytest", *PLUGINS, "-p", "no:randomly", "-p", "no:cacheprovider"]
    command += ["--kata-json=results.json", "--rootdir", str(folder), *args]
    env = {**os.environ, "KATA_SOURCE": str(folder / "learner"), "PYTHONPATH": str(REPO_ROOT)}
    run = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    return run, json.loads((folder / "results.json").read_text())


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory) -> Graded:
    """One run over every mishap at once (a subprocess: torch cannot be imported twice in one process)."""
    folder = tmp_path_factory.mktemp("graded")
    (folder / "learner").mkdir()
    for name, text in LEARNER_FILES.items():
        (folder / "learner" / f"{name}.py").write_text(text)
        header = f"from kata_harness import load_kata\n\nkata = load_kata({name!r})\n\n"
        (folder / f"test_{name}.py").write_text(header + TESTS[name])
    run, records = grade(folder, "--timeout=2")
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout + run.stderr
    return run.stdout, {(r["kata"], r["name"]): r for r in records}


def test_syntax_error_is_one_line_naming_file_and_line(graded: Graded) -> None:
    output, records = graded
    record = records[("k91_syntax", "test_f")]
    assert record["outcome"] == "broken"
    assert "learner/k91_syntax.py:1: SyntaxError" in record["message"]
    assert records[("k91_syntax", "test_f_again")]["outcome"] == "broken"
    assert_lines(output, "*91*broken*", "*cannot import the kata: *k91_syntax.py:1: SyntaxError*")


def test_exception_at_import_names_the_line(graded: Graded) -> None:
    _, records = graded
    message = records[("k96_import_error", "test_f")]["message"]
    assert "k96_import_error.py:3: ZeroDivisionError while importing" in message


def test_endless_loop_costs_one_test(graded: Graded) -> None:
    _, records = graded
    looping = records[("k92_loop", "test_f")]
    assert looping["outcome"] == "failed"
    assert "timed out in `f`" in looping["message"] and "endless loop" in looping["message"]
    assert records[("k92_loop", "test_g")]["outcome"] == "passed"


def test_leaked_global_state_is_reported_and_undone(graded: Graded) -> None:
    _, records = graded
    leaking = records[("k93_leak", "test_f")]
    assert leaking["outcome"] == "error"
    assert "leaked global state: default dtype left as torch.float64" in leaking["message"]
    assert records[("k93_leak", "test_state_is_fresh_again")]["outcome"] == "passed"


def test_unimplemented_function_reads_as_not_started(graded: Graded) -> None:
    output, records = graded
    record = records[("k94_stub", "test_f")]
    assert record["outcome"] == "not started"
    assert "`f` still raises NotImplementedError" in record["message"]
    assert "k94_stub.py:2" in record["location"]
    assert_lines(output, "*94*0/1*not started*")


def test_other_katas_are_still_graded(graded: Graded) -> None:
    output, records = graded
    assert records[("k95_done", "test_f")]["outcome"] == "passed"
    assert_lines(output, "*95*1/2*broken*")


def test_missing_name_says_what_is_missing(graded: Graded) -> None:
    _, records = graded
    message = records[("k95_done", "test_missing_name")]["message"]
    assert "k95_done.py defines no `g`" in message


def test_mishaps_print_no_tracebacks(graded: Graded) -> None:
    output, _ = graded
    assert "Traceback" not in output
    assert "raise NotImplementedError" not in output, "a not-started test printed its source"


def test_next_line_points_at_the_first_unfinished_kata(graded: Graded) -> None:
    output, _ = graded
    assert_lines(output, "next: kata 91 (k91_syntax) - test_f", "*edit *learner/k91_syntax.py:1 *")


def test_grading_writes_nothing_into_the_graded_folder(graded: Graded, tmp_path_factory) -> None:
    folder = Path(tmp_path_factory.getbasetemp()) / "graded0" / "learner"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{name}.py" for name in LEARNER_FILES)


def assert_lines(output: str, *patterns: str) -> None:
    """Each pattern matches some line of `output`, in order (fnmatch syntax)."""
    pytest.LineMatcher(output.splitlines()).fnmatch_lines(list(patterns))


def test_progress_shows_what_changed_since_the_last_run(tmp_path: Path) -> None:
    (tmp_path / "learner").mkdir()
    (tmp_path / "learner" / "k95_done.py").write_text("def f():\n    return 0\n")
    (tmp_path / "learner" / "k96_import_error.py").write_text("def f():\n    return 1\n")
    for name in ("k95_done", "k96_import_error"):
        header = f"from kata_harness import load_kata\n\nkata = load_kata({name!r})\n\n"
        (tmp_path / f"test_{name}.py").write_text(header + "def test_f():\n    assert kata.f() == 1\n")
    progress = f"--progress-file={tmp_path / 'progress.json'}"
    grade(tmp_path, progress)
    (tmp_path / "learner" / "k95_done.py").write_text("def f():\n    return 1\n")
    (tmp_path / "learner" / "k96_import_error.py").write_text("def f(:\n")
    run, _ = grade(tmp_path, progress)
    assert_lines(
        run.stdout,
        "*95*1/1*done*in progress",
        "*96*0/1*broken*done",
        "newly done since last run: k95",
        "newly broken since last run: k96",
    )
