"""Saved progress changes only for katas a run graded in full, and survives odd or concurrent files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kata_harness.progress import ProgressUnreadable, read_progress, update_progress
from kata_harness.source import REPO_ROOT
from kata_harness.tests.inner_run import PLUGINS, assert_lines, ctrl_c_reaches_python, grade, write_katas

pytestmark = pytest.mark.timeout(300)

DONE_KATA = (
    "def f():\n    return 1\n\ndef g():\n    return 2\n",
    "def test_f():\n    assert kata.f() == 1\n\ndef test_g():\n    assert kata.g() == 2\n",
)
STUB_KATA = ("def f():\n    raise NotImplementedError\n", "def test_f():\n    assert kata.f() == 1\n")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_katas(tmp_path, {"k91_done": DONE_KATA, "k92_stub": STUB_KATA})
    return tmp_path


def progress_of(folder: Path) -> dict:
    path = folder / "progress.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run(folder: Path, *args: str) -> subprocess.CompletedProcess:
    completed, _ = grade(folder, f"--progress-file={folder / 'progress.json'}", *args)
    return completed


def test_a_full_run_saves_every_kata(folder: Path) -> None:
    run(folder)
    assert progress_of(folder) == {"k91_done": "done", "k92_stub": "not started"}


@pytest.mark.parametrize(
    "args",
    [
        ("-k", "test_f"),
        ("test_k91_done.py::test_f",),
        ("--collect-only",),
        ("-x", "test_k92_stub.py", "test_k91_done.py"),
    ],
    ids=["-k", "test id", "collect-only", "-x"],
)
def test_a_partial_run_saves_nothing_it_did_not_grade_in_full(folder: Path, args: tuple[str, ...]) -> None:
    completed = run(folder, *args)
    assert "INTERNALERROR" not in completed.stdout + completed.stderr, completed.stdout + completed.stderr
    if "--collect-only" not in args:
        assert_lines(completed.stdout, "*kata scoreboard*", " 91 *", "*part of the kata was graded*")
    assert "k91_done" not in progress_of(folder), completed.stdout
    assert "done" not in [
        line.split()[-1] for line in completed.stdout.splitlines() if line.startswith(" 91")
    ]


def test_a_kata_whose_tests_all_skip_is_not_done(tmp_path: Path) -> None:
    skipping = (
        "def f():\n    return 1\n",
        "import pytest\n\n@pytest.mark.skip('later')\ndef test_f():\n    kata.f()\n",
    )
    write_katas(tmp_path, {"k93_skipped": skipping})
    completed = run(tmp_path)
    assert_lines(completed.stdout, "*93*0/0*not graded*")
    assert progress_of(tmp_path) == {}


def test_ctrl_c_during_a_test_fakes_no_done(folder: Path) -> None:
    looping = (
        "def f():\n    while True:\n        pass\n",
        "def test_ok():\n    assert True\n\ndef test_f():\n    kata.f()\n",
    )
    write_katas(folder, {"k94_loop": looping})
    command = [sys.executable, "-m", "pytest", *PLUGINS, "-p", "no:randomly", "-p", "no:cacheprovider", "-v",
               "--timeout=60", f"--progress-file={folder / 'progress.json'}", "--rootdir", str(folder),
               "test_k94_loop.py"]  # fmt: skip
    env = {
        **os.environ,
        "KATA_SOURCE": str(folder / "learner"),
        "PYTHONPATH": str(Path.cwd()),
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        command,
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_reaches_python if os.name == "posix" else None,
    )
    assert process.stdout is not None
    seen = []
    for line in process.stdout:  # wait until test_ok passed and test_f is looping
        seen.append(line)
        if "test_ok PASSED" in line:
            break
    time.sleep(2)
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)
    output = "".join(seen) + rest
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output
    assert_lines(output, "*kata scoreboard*", "*94*1/1*not graded*")
    assert "every graded kata passes" not in output
    assert progress_of(folder) == {}


def test_an_unreadable_progress_file_is_a_notice_not_a_crash(folder: Path) -> None:
    for content in ("[1, 2]", "null", "42", "{not json"):
        (folder / "progress.json").write_text(content)
        completed = run(folder)
        assert "INTERNALERROR" not in completed.stdout + completed.stderr
        assert_lines(
            completed.stdout, "*kata scoreboard*", "*progress.json does not hold a kata -> status table*"
        )
        assert progress_of(folder)["k91_done"] == "done"


def test_a_progress_file_that_cannot_be_written_keeps_the_scoreboard(folder: Path) -> None:
    (folder / "progress.json").mkdir()
    completed = run(folder)
    assert "INTERNALERROR" not in completed.stdout + completed.stderr
    assert_lines(completed.stdout, "*kata scoreboard*", "*91*2/2*done*", "*could not save your progress*")


def test_kata_json_into_a_missing_folder_is_written(folder: Path) -> None:
    completed, _ = grade(folder, "--kata-json=deep/er/results.json")
    assert json.loads((folder / "deep" / "er" / "results.json").read_text()), completed.stdout


def test_updates_merge_with_what_is_on_disk_now(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    update_progress({"k01": "done"}, path)
    update_progress({"k02": "broken"}, path)  # a second run that read the file before the first saved
    assert read_progress(path) == {"k01": "done", "k02": "broken"}


def test_reading_odd_files(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    assert read_progress(path) == {}
    path.write_text('{"k01": 3}')
    with pytest.raises(ProgressUnreadable):
        read_progress(path)


def test_pytest_started_inside_katas_says_where_the_graders_are() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT / "katas",
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert run.returncode == pytest.ExitCode.NO_TESTS_COLLECTED
    assert "no graders here: they live in tests/" in run.stdout
