"""The learning loop: hint, compare, reset and watch, with their bad inputs - always in a copy of the repo.

Each command runs as `python -m kata_harness.<module>` in a temporary copy holding kata 1 alone, so the
real katas/ is never touched. Commands that must work in nox's own interpreter (no torch) run with
`python -S`, which hides site-packages. Runs that grade start pytest and import torch: there are few.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kata_harness import compare, hints, watch, workflow
from kata_harness.catalog import KataInfo, all_katas, find_kata
from kata_harness.source import REPO_ROOT
from kata_harness.stubgen import STUB_BODY, make_stub
from kata_harness.tests.inner_run import ctrl_c_reaches_python

pytestmark = pytest.mark.timeout(240)  # grading runs start a fresh interpreter that imports torch

KATA = "k01_pytorch_features"
STUB_LINE = STUB_BODY.split("  #")[0]  # "raise NotImplementedError"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the repository with kata 1 alone: harness, solution, stub, grader, hints, pyproject."""
    shutil.copytree(
        REPO_ROOT / "kata_harness",
        tmp_path / "kata_harness",
        ignore=shutil.ignore_patterns("__pycache__", "tests"),
    )
    for folder, name in [
        ("solutions", f"{KATA}.py"),
        ("katas", f"{KATA}.py"),
        ("tests", f"test_{KATA}.py"),
        ("tests", "conftest.py"),
        ("hints", f"{KATA}.toml"),
    ]:
        (tmp_path / folder).mkdir(exist_ok=True)
        shutil.copy(REPO_ROOT / folder / name, tmp_path / folder / name)
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def learner(repo: Path) -> Path:
    return repo / "katas" / f"{KATA}.py"


def solution_text() -> str:
    return (REPO_ROOT / "solutions" / f"{KATA}.py").read_text(encoding="utf-8")


def command(module: str, *args: str, bare: bool = False) -> list[str]:
    """`python -m kata_harness.<module> ARGS`; `bare` hides site-packages, hence torch, as in nox."""
    return [sys.executable, *(["-S"] if bare else []), "-m", f"kata_harness.{module}", *args]


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KATA_SOURCE", "PYTHONPATH", "NO_COLOR")}
    return {**env, "NO_COLOR": "1", **extra}


def run(repo: Path, module: str, *args: str, bare: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a command in the copy, with stdin that is not a terminal."""
    return subprocess.run(
        command(module, *args, bare=bare),
        cwd=repo,
        env=environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=200,
    )


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return lines[0]


def hint_table() -> dict[str, dict[str, str]]:
    return hints.load_hints(find_kata(KATA))


# --- hint ---------------------------------------------------------------------------------------------


def test_hint_gives_the_nudge_then_the_api_for_the_first_unfinished_task(repo: Path) -> None:
    first = run(repo, "hints", "1")
    assert first.returncode == 0, first.stderr
    assert "grading kata 1" in first.stdout
    assert "task 1/3: build_mlp" in first.stdout and "hint 1/3" in first.stdout
    assert hint_table()["build_mlp"]["nudge"].split()[:6] == first.stdout.split("nudge:")[1].split()[:6]
    state = json.loads((repo / ".katas-hints.json").read_text())
    assert state[KATA]["shown"] == {"build_mlp": 1}

    second = run(repo, "hints", "1")
    assert second.returncode == 0, second.stderr
    assert "hint 2/3" in second.stdout and "the API to reach for" in second.stdout
    assert hint_table()["build_mlp"]["api"].split()[0] in second.stdout
    assert "grading kata" not in second.stdout, "an unchanged kata was graded again"
    assert "\033[" not in first.stdout + second.stdout, "colour on a pipe"


def test_hint_all_shows_every_level_of_every_task_without_grading(repo: Path) -> None:
    result = run(repo, "hints", "k01", "--all", bare=True)
    assert result.returncode == 0, result.stderr
    flat = " ".join(result.stdout.split())
    for task, levels in hint_table().items():
        assert f"task {list(hint_table()).index(task) + 1}/3: {task}" in result.stdout
        for text in levels.values():
            assert " ".join(text.split()) in flat
    assert not (repo / ".katas-hints.json").exists()


def test_hint_without_an_interpreter_that_grades_guesses_the_task_from_the_code(repo: Path) -> None:
    stub = learner(repo).read_text()
    learner(repo).write_text(stub.replace(STUB_BODY, "return None", 1))  # build_mlp "done"
    result = run(repo, "hints", "1", bare=True)
    assert result.returncode == 0, result.stderr
    assert "could not grade" in result.stdout
    assert "task 2/3: capture_graphs" in result.stdout and "hint 1/3" in result.stdout


def test_hint_blames_the_first_failing_task_in_source_order() -> None:
    kata = find_kata(KATA)
    source = solution_text()
    spans = hints.task_spans(source, kata.tasks)
    records = [
        {"outcome": "passed", "names": ["build_mlp"], "location": ""},
        {"outcome": "failed", "names": ["fit_line"], "location": "tests/test_k01_pytorch_features.py:9"},
        {"outcome": "failed", "names": ["build_mlp", "capture_graphs"],
         "location": f"katas/{KATA}.py:{spans['capture_graphs'][0] + 2}"},
    ]  # fmt: skip
    assert hints.current_task(kata, records, source) == "capture_graphs"  # its code, not build_mlp's, failed
    assert hints.current_task(kata, records[:2], source) == "fit_line"
    assert hints.current_task(kata, records[:1], source) is None


@pytest.mark.parametrize("kata", all_katas(), ids=lambda kata: kata.name)
def test_every_kata_has_three_hints_for_every_task(kata: KataInfo) -> None:
    assert hints.problems_with_hints(kata) == []


GRADED_TASK_GONE = "graded-task-gone"  # a saved grading that names a task the kata no longer has


def saved_digest(repo: Path) -> str:
    """hints.digest for the copy: the learner's file and the kata's tests."""
    hasher = hashlib.sha256()
    for path in (learner(repo), repo / "tests" / f"test_{KATA}.py"):
        hasher.update(path.read_bytes() + b"\0")
    return hasher.hexdigest()


@pytest.mark.parametrize(
    "state",
    [
        "[]",
        "null",
        "3",
        "not json {",
        json.dumps({KATA: []}),
        json.dumps({KATA: None}),
        json.dumps({KATA: {"shown": []}}),
        json.dumps({KATA: {"shown": {"build_mlp": "two"}}}),
        json.dumps({KATA: {"shown": {"build_mlp": None, "capture_graphs": True}}}),
        json.dumps({KATA: {"graded": 5}}),
        json.dumps({KATA: {"graded": {"digest": 1, "task": ["build_mlp"]}}}),
        GRADED_TASK_GONE,
    ],
)
def test_hint_survives_a_malformed_state_file_with_at_most_a_one_line_notice(repo: Path, state: str) -> None:
    if state == GRADED_TASK_GONE:
        graded = {"digest": saved_digest(repo), "task": "no_such_task", "tally": "0/1 tests pass", "note": ""}
        state = json.dumps({KATA: {"graded": graded}})
    (repo / ".katas-hints.json").write_text(state)
    result = run(repo, "hints", "1", bare=True)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 1
    assert "task 1/3: build_mlp" in result.stdout and "hint 1/3" in result.stdout
    saved = json.loads((repo / ".katas-hints.json").read_text())
    assert saved[KATA]["shown"] == {"build_mlp": 1}  # a clean state replaces the bad one


def test_hint_keeps_the_good_part_of_a_state_file(repo: Path) -> None:
    state = {KATA: {"shown": {"build_mlp": 1, "capture_graphs": "x"}}, "k99_gone": 7}
    (repo / ".katas-hints.json").write_text(json.dumps(state))
    result = run(repo, "hints", "1", bare=True)
    assert result.returncode == 0, result.stderr
    assert one_line(result.stderr) == "note: ignored malformed entries in .katas-hints.json"
    assert "hint 2/3" in result.stdout  # build_mlp's level survived


def test_hint_without_a_kata_and_a_malformed_progress_file_is_one_line(repo: Path) -> None:
    (repo / ".katas-progress.json").write_text("[1, 2]")
    result = run(repo, "hints", bare=True)
    assert result.returncode == 2
    assert "say which kata" in one_line(result.stderr)


def test_an_interpreter_that_cannot_run_makes_grading_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A .nox/check/bin/python that will not start (copied from another machine, say): hint guesses the task
    and compare says it cannot tell, instead of a traceback."""
    broken = tmp_path / "python"
    broken.write_text("not a program\n")  # and not executable
    monkeypatch.setattr(workflow, "grading_python", lambda: str(broken))
    with pytest.raises(workflow.GradingUnavailable, match=r"^cannot run .*python: "):
        workflow.grade(find_kata(KATA))


# --- bad input: one line, non-zero -------------------------------------------------------------------


@pytest.mark.parametrize("module", ["hints", "compare", "reset", "watch"])
def test_unknown_kata_is_one_line_listing_the_valid_ones(repo: Path, module: str) -> None:
    result = run(repo, module, "99", bare=True)
    assert result.returncode == 2
    assert one_line(result.stderr) == f"no kata '99'; choose one of: 1 ({KATA})"
    assert result.stdout == ""


@pytest.mark.parametrize("module", ["hints", "compare", "reset", "watch"])
def test_unknown_option_is_one_line(repo: Path, module: str) -> None:
    result = run(repo, module, "1", "--frobnicate", bare=True)
    assert result.returncode == 2
    assert "--frobnicate" in one_line(result.stderr)


@pytest.mark.parametrize("module", ["hints", "compare"])
def test_a_deleted_kata_is_reported_missing_with_the_reset_command(repo: Path, module: str) -> None:
    learner(repo).unlink()
    result = run(repo, module, "1", bare=True)
    assert result.returncode == 1
    assert one_line(result.stderr) == f"katas/{KATA}.py is missing - `nox -s reset -- 1` brings back the stub"


# --- compare ------------------------------------------------------------------------------------------


LATIN_1_LINE = 3  # where the non-UTF-8 byte goes


def write_latin_1(repo: Path, *, declared: bool = False) -> None:
    """The stub with a comment saved in Latin-1 ("café" as the byte 0xe9) on line LATIN_1_LINE."""
    lines = make_stub(solution_text()).encode("utf-8").splitlines(keepends=True)
    cookie = [b"# -*- coding: latin-1 -*-\n"] if declared else []
    lines = [*cookie, *lines]
    lines.insert(LATIN_1_LINE - 1, "# café\n".encode("latin-1"))
    learner(repo).write_bytes(b"".join(lines))


@pytest.mark.parametrize("args", [("hints", "1"), ("compare", "1", "--peek"), ("compare", "1")])
def test_a_kata_file_that_is_not_utf8_is_one_line_naming_the_line(repo: Path, args: tuple[str, ...]) -> None:
    write_latin_1(repo)
    result = run(repo, *args, bare=True)
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        f"katas/{KATA}.py:{LATIN_1_LINE}: byte 0xe9 is not valid UTF-8 - save the file as UTF-8"
    )


def test_a_kata_file_that_declares_its_encoding_is_compared(repo: Path) -> None:
    write_latin_1(repo, declared=True)  # Python reads it, and so does compare
    result = run(repo, "compare", "1", "--peek", bare=True)
    assert result.returncode == 0, result.stderr
    assert "3 function(s) differ" in result.stdout


def test_compare_of_a_file_with_a_null_byte_falls_back_to_whole_files(repo: Path) -> None:
    learner(repo).write_text(solution_text() + "\x00\n")
    result = run(repo, "compare", "1", "--peek", bare=True)
    assert result.returncode == 0, result.stderr
    assert "comparing whole files instead" in result.stdout and "Traceback" not in result.stderr


def test_compare_refuses_off_a_terminal_until_the_kata_passes(repo: Path) -> None:
    result = run(repo, "compare", "1")
    assert result.returncode == 1
    assert "does not pass yet" in one_line(result.stderr) and "--peek" in result.stderr
    assert "+++" not in result.stdout and "nn.Sequential(" not in result.stdout


def test_compare_peek_diffs_only_the_functions_that_differ(repo: Path) -> None:
    mine = solution_text().replace("nn.ReLU(),", "nn.Sigmoid(),")  # build_mlp differs
    graphs = "    graphs: list[torch.fx.GraphModule] = "
    mine = mine.replace(f"{graphs}[]\n", f"{graphs}([])  # hm\n")  # capture_graphs: other format only
    mine += "\n\ndef _helper() -> None:\n    pass\n"
    learner(repo).write_text(mine)
    result = run(repo, "compare", "1", "--peek", bare=True)
    assert result.returncode == 0, result.stderr
    assert f"--- katas/{KATA}.py (yours) build_mlp" in result.stdout
    assert f"+++ solutions/{KATA}.py (reference) build_mlp" in result.stdout
    assert "-        nn.Sigmoid()," in result.stdout and "+        nn.ReLU()," in result.stdout
    assert "capture_graphs" not in result.stdout and "fit_line" not in result.stdout  # same code
    assert "only in yours (helpers the reference does without): _helper" in result.stdout
    assert "1 function(s) differ" in result.stdout
    hunk = re.search(r"^@@ -(\d+),(\d+) ", result.stdout, re.MULTILINE)
    assert hunk, result.stdout
    sigmoid_line = mine.splitlines().index("        nn.Sigmoid(),") + 1
    start, length = int(hunk.group(1)), int(hunk.group(2))
    assert start <= sigmoid_line < start + length, "hunk headers must count lines of the learner's file"


def test_compare_ignores_renamed_locals_but_shows_real_differences_as_written(repo: Path) -> None:
    # capture_graphs: its local `result` renamed, and nothing else.
    mine = solution_text().replace("    result = torch.compile(", "    output = torch.compile(")
    mine = mine.replace("    return result, graphs", "    return output, graphs")
    mine = mine.replace("loss", "mse").replace("for _ in", "for step in")  # fit_line: renamed locals...
    mine = mine.replace("w -= lr * w.grad", "w -= lr * 2 * w.grad")  # ... and one real change
    learner(repo).write_text(mine)
    result = run(repo, "compare", "1", "--peek", bare=True)
    assert result.returncode == 0, result.stderr
    assert "capture_graphs" not in result.stdout and "build_mlp" not in result.stdout
    assert f"--- katas/{KATA}.py (yours) fit_line" in result.stdout
    assert "1 function(s) differ" in result.stdout
    # The diff is of the code as written: the learner's own names, on both sides of the change.
    assert "-        mse = ((w * xs + b - ys) ** 2).mean()" in result.stdout
    assert "+        loss = ((w * xs + b - ys) ** 2).mean()" in result.stdout
    assert "-            w -= lr * 2 * w.grad" in result.stdout


def shapes(source: str) -> str:
    return compare.functions(textwrap.dedent(source))["f"].shape


def test_shape_is_blind_to_local_names_only() -> None:
    base = """
        def f(xs, lr=0.1):
            total = 0
            for x in xs:
                total += x * lr
            squares = [v * v for v in xs]
            with open("p", encoding="utf-8") as fh:
                text = fh.read()
            try:
                pass
            except ValueError as err:
                raise RuntimeError(text) from err
            helper = lambda t: t + total
            return total, squares, helper(1)
        """
    renamed = (
        base.replace("total", "acc").replace("for x in xs", "for item in xs").replace("x * lr", "item * lr")
        .replace("v * v for v", "q * q for q").replace("fh", "handle").replace("err", "e")
        .replace("text", "body").replace("helper", "h").replace("lambda t: t", "lambda u: u")
    )  # fmt: skip
    assert shapes(renamed) == shapes(base)
    different = {
        "a parameter": base.replace("xs", "values"),  # the contract
        "a global": base.replace("open(", "print("),
        "an attribute": base.replace("fh.read()", "fh.readline()"),
        "a keyword": base.replace("encoding=", "errors="),
        "which local is used": base.replace("RuntimeError(text)", "RuntimeError(squares)"),
    }
    for what, source in different.items():
        assert shapes(source) != shapes(base), what


def test_shape_keeps_the_names_a_nested_class_binds() -> None:
    base = """
        def f(n):
            class Net:
                def forward(self, x):
                    return x * n
            return Net
        """
    assert shapes(base.replace("Net", "Model")) == shapes(base)  # the class is a local
    assert shapes(base.replace("forward", "forwrd")) != shapes(base)  # its method is an attribute


def test_compare_after_the_kata_passes_asks_nothing(repo: Path) -> None:
    learner(repo).write_text(solution_text())
    result = run(repo, "compare", "1")
    assert result.returncode == 0, result.stderr
    assert "every function matches the reference" in result.stdout


@pytest.mark.parametrize("name", [f"test_{KATA}", KATA, "1"])
def test_compare_names_the_kata_as_the_open_file_does(repo: Path, name: str) -> None:
    """VS Code's task passes the open file's name: the kata's, its solution's or its test file's."""
    learner(repo).write_text(solution_text())
    result = run(repo, "compare", name, "--peek", bare=True)
    assert result.returncode == 0, result.stderr
    assert "every function matches the reference" in result.stdout


def test_compare_asks_on_a_terminal_and_obeys_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    failing = [{"name": "test_x", "nodeid": "t::test_x", "outcome": "failed", "message": "", "names": []}]
    monkeypatch.setattr(workflow, "grade", lambda kata, **_: failing)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    asked = []
    for answer, shown in [("y", True), ("", False), ("no", False)]:
        monkeypatch.setattr("builtins.input", lambda prompt, answer=answer: asked.append(prompt) or answer)
        assert workflow.confirmed(find_kata(KATA), "the reference")[0] is shown
    assert asked == ["The kata does not pass yet; show the reference anyway? [y/N] "] * 3


# --- reset --------------------------------------------------------------------------------------------


def test_reset_backs_up_the_learners_file_then_restores_the_pristine_stub(repo: Path) -> None:
    stub = make_stub(solution_text())
    for attempt in ("my first try\n", "my second try\n"):  # twice within a second: two backups
        learner(repo).write_text(attempt)
        result = run(repo, "reset", "1", bare=True)
        assert result.returncode == 0, result.stderr
        assert learner(repo).read_text() == stub
    backups = sorted((repo / ".katas-backup").iterdir(), key=lambda path: path.stem)  # "-2" after none
    assert [b.read_text() for b in backups] == ["my first try\n", "my second try\n"]
    assert re.fullmatch(rf"{KATA}-\d{{8}}-\d{{6}}\.py", backups[0].name)
    assert f"backed up katas/{KATA}.py to .katas-backup/{backups[1].name}" in result.stdout


def test_reset_marks_the_kata_not_started_so_the_next_check_does_not_call_it_newly_broken(
    repo: Path,
) -> None:
    (repo / ".katas-progress.json").write_text(json.dumps({KATA: "done", "k02_other": "done"}))
    learner(repo).write_text(solution_text())
    assert run(repo, "reset", "1", bare=True).returncode == 0
    progress = json.loads((repo / ".katas-progress.json").read_text())
    assert progress == {KATA: "not started", "k02_other": "done"}


def test_reset_of_the_untouched_stub_makes_no_backup(repo: Path) -> None:
    result = run(repo, "reset", "k01", bare=True)
    assert result.returncode == 0 and "already the pristine stub" in result.stdout
    assert not (repo / ".katas-backup").exists()


def test_reset_without_a_kata_refuses(repo: Path) -> None:
    learner(repo).write_text("my work\n")
    result = run(repo, "reset", bare=True)
    assert result.returncode == 2
    assert "say which kata" in one_line(result.stderr)
    assert learner(repo).read_text() == "my work\n"


def test_reset_brings_back_a_deleted_kata(repo: Path) -> None:
    learner(repo).unlink()
    result = run(repo, "reset", "1", bare=True)
    assert result.returncode == 0, result.stderr
    assert "was missing" in result.stdout
    assert learner(repo).read_text() == make_stub(solution_text())
    assert not (repo / ".katas-backup").exists()


# --- watch --------------------------------------------------------------------------------------------


@pytest.fixture
def start_watch() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start the watcher in a copy, wait for its banner (printed once it sees changes); kill it at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(repo: Path, *args: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            command("watch", *args),
            cwd=repo,
            env=environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=ctrl_c_reaches_python if os.name == "posix" else None,
        )
        started.append(process)
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert banner.startswith("watching katas/ for saves"), banner
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_watch_grades_a_changed_kata_and_reports_a_deleted_one_with_reset(
    repo: Path, start_watch: Callable[..., subprocess.Popen[str]]
) -> None:
    process = start_watch(repo, "--once")
    learner(repo).unlink()
    output, _ = process.communicate(timeout=200)
    assert f"saved {KATA} - grading" in output
    assert "kata scoreboard" in output and "broken" in output
    assert f"katas/{KATA}.py is missing - `nox -s reset -- 1` brings back the stub" in output
    assert process.returncode == 1  # pytest's verdict, and --once stopped after one grading


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT cannot be sent to a process on Windows")
def test_watch_stops_cleanly_on_ctrl_c(repo: Path, start_watch: Callable[..., subprocess.Popen[str]]) -> None:
    process = start_watch(repo)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert output.strip() == "stopped watching - bye"
    assert process.returncode == 0


def test_watch_maps_saves_to_katas_and_ignores_everything_else(tmp_path: Path) -> None:
    real = [kata.name for kata in all_katas()][:2]
    changes = {
        (2, str(tmp_path / f"{real[1]}.py")),
        (1, str(tmp_path / f"{real[0]}.py")),
        (3, str(tmp_path / f"{real[0]}.py")),  # deleted: graded, and reported missing
        (1, str(tmp_path / f".{real[0]}.py.swp")),
        (1, str(tmp_path / f"{real[0]}.py~")),
        (1, str(tmp_path / "sub" / f"{real[0]}.py")),
        (1, str(tmp_path / "k99_not_a_kata.py")),
        (1, str(tmp_path / "notes.txt")),
    }
    assert [kata.name for kata in watch.changed_katas(changes, tmp_path)] == real


def test_watch_loop_grades_each_batch_that_touches_a_kata(tmp_path: Path) -> None:
    kata = find_kata(KATA)
    saved = {(2, str(tmp_path / f"{KATA}.py"))}
    batches = [set(), {(2, str(tmp_path / "notes.txt"))}, saved, {(2, "never seen")}]
    graded: list[list[str]] = []

    def grade(katas: list[KataInfo]) -> int:
        graded.append([k.name for k in katas])
        return 7

    assert watch.watch(tmp_path, iter(batches), grade, first=[kata], once=True) == 7
    assert graded == [[KATA], [KATA]]  # once at the start, once for the save; then --once stops


def test_watch_polls_where_file_events_do_not_arrive(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WATCHFILES_FORCE_POLLING", raising=False)
    monkeypatch.setattr(watch, "filesystem_type", lambda path: "ext4")
    assert watch.polling_reason(tmp_path) is None
    monkeypatch.setattr(watch, "filesystem_type", lambda path: "fuse.grpcfuse")
    assert "fuse.grpcfuse" in (watch.polling_reason(tmp_path) or "")
    monkeypatch.setenv("WATCHFILES_FORCE_POLLING", "1")
    assert watch.polling_reason(tmp_path) is None  # watchfiles honours the variable itself
    monkeypatch.delenv("WATCHFILES_FORCE_POLLING")
    uname = watch.platform.uname_result("Linux", "box", "5.15.153.1-microsoft-standard-WSL2", "", "x86_64")
    monkeypatch.setattr(watch.platform, "uname", lambda: uname)
    assert "WSL" in (watch.polling_reason(Path("/mnt/c/Users/me/pytorch-katas/katas")) or "")


# --- colour -------------------------------------------------------------------------------------------


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert workflow.paint("x", "red") == "\033[31mx\033[0m"
    monkeypatch.setenv("NO_COLOR", "")
    assert workflow.paint("x", "red") == "x"
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert workflow.paint("x", "red") == "x"
