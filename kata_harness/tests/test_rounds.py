"""Interview rounds: drill, mock interviews and bug hunts - always in a temporary copy of the repository.

The drill and the mock run as `python -m kata_harness.<module>` in a copy holding kata 4 (or a small bug
hunt made up here), so the real katas/ and progress file are never touched; a digest of the copy's katas/
proves the rounds never write there either. Grading runs import torch: there are few.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from kata_harness import drill, mock, stubgen
from kata_harness.catalog import KataInfo
from kata_harness.source import REPO_ROOT
from kata_harness.stubgen import make_stub

pytestmark = pytest.mark.timeout(300)

KATA = "k04_autograd"


def copy_repo(tmp_path: Path, katas: list[str]) -> Path:
    """A copy of the repository with only `katas`: harness, solutions, stubs, graders, hints, answers."""
    shutil.copytree(
        REPO_ROOT / "kata_harness",
        tmp_path / "kata_harness",
        ignore=shutil.ignore_patterns("__pycache__", "tests"),
    )
    for name in katas:
        for folder, file in [
            ("solutions", f"{name}.py"),
            ("katas", f"{name}.py"),
            ("tests", f"test_{name}.py"),
            ("hints", f"{name}.toml"),
            ("answers", f"{name}.toml"),
        ]:
            (tmp_path / folder).mkdir(exist_ok=True)
            shutil.copy(REPO_ROOT / folder / file, tmp_path / folder / file)
    (tmp_path / "tests").mkdir(exist_ok=True)
    shutil.copy(REPO_ROOT / "tests" / "conftest.py", tmp_path / "tests" / "conftest.py")
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def run(repo: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KATA_SOURCE", "PYTHONPATH")}
    return subprocess.run(
        [sys.executable, "-m", f"kata_harness.{module}", *args],
        cwd=repo,
        env={**env, "NO_COLOR": "1"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=250,
    )


def digest(folder: Path) -> str:
    hasher = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        hasher.update(path.name.encode() + (path.read_bytes() if path.is_file() else b""))
    return hasher.hexdigest()


def progress(repo: Path) -> dict:
    return json.loads((repo / ".katas-progress.json").read_text())


def save_progress(repo: Path, table: dict) -> None:
    (repo / ".katas-progress.json").write_text(json.dumps(table))


# --- drill --------------------------------------------------------------------------------------------


def test_drill_has_nothing_to_pose_before_a_kata_is_passed(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path, [KATA])
    for args in ([], ["--list"]):
        result = run(repo, "drill", *args)
        assert result.returncode == 0, result.stderr
        assert "nothing to drill yet" in result.stdout
    save_progress(repo, {KATA: "in progress"})
    assert "nothing to drill yet" in run(repo, "drill").stdout


def test_drill_poses_a_passed_task_blank_in_a_scratch_copy_and_schedules_it(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path, [KATA])
    save_progress(repo, {KATA: "done"})
    learner_files = digest(repo / "katas")
    listing = run(repo, "drill", "--list")
    assert "due now: 7" in listing.stdout and "`derivative`" in listing.stdout, listing.stdout

    posed = run(repo, "drill")
    assert posed.returncode == 0, posed.stderr
    scratch = repo / ".katas-scratch" / "drill" / f"{KATA}.py"
    assert "`derivative`" in posed.stdout and ".katas-scratch/drill/" in posed.stdout
    reference = (repo / "solutions" / f"{KATA}.py").read_text()
    assert scratch.read_text() == make_stub(reference, only={"derivative"}), "only the drilled task is blank"
    assert run(repo, "drill").stdout.startswith("you are drilling"), "asking again repeats the drill"

    blank = run(repo, "drill", "--grade")
    assert blank.returncode == 1 and "not yet" in blank.stdout and "NotImplementedError" in blank.stdout
    assert progress(repo)["drill"]["current"]["gradings"] == 0, "grading a blank task counts as an attempt"

    wrong = reference.replace("return 0.0 if grad is None else float(grad)", "return 0.0")
    assert wrong != reference
    scratch.write_text(wrong)
    failed = run(repo, "drill", "--grade")
    assert failed.returncode == 1 and "not yet" in failed.stdout, failed.stdout

    scratch.write_text(reference)
    passed = run(repo, "drill", "--grade")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "after 2 gradings" in passed.stdout
    saved = progress(repo)
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    assert saved["drill"]["boxes"] == {f"{KATA}.derivative": {"box": 1, "due": tomorrow}}
    assert "current" not in saved["drill"] and saved[KATA] == "done", "a drill changed the kata's status"
    assert digest(repo / "katas") == learner_files, "the drill wrote into katas/"

    run(repo, "drill")  # the next task: the answer to the last drill is kept in a backup
    backups = list((repo / ".katas-backup").glob(f"drill-{KATA}-*.py"))
    assert len(backups) == 1 and backups[0].read_text() == reference


def test_drill_moves_a_first_try_pass_up_and_a_failure_back_to_box_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(drill, "today", lambda: date(2026, 1, 10))
    assert drill.moved({"box": 0}, first_try=True) == {"box": 1, "due": "2026-01-11"}
    assert drill.moved({"box": 3}, first_try=True) == {"box": 4, "due": "2026-01-26"}
    assert drill.moved({"box": 5}, first_try=True) == {"box": 5, "due": "2026-02-14"}
    assert drill.moved({"box": 4}, first_try=False) == {"box": 1, "due": "2026-01-11"}
    table = {
        "a": {"box": 2, "due": "2026-01-01"},
        "b": {"box": 1, "due": "2026-01-09"},
        "c": {"box": 0, "due": "2026-01-10"},
        "d": {"box": 0, "due": "2026-01-11"},  # tomorrow: not due
    }
    assert drill.due(table) == ["c", "b", "a"], "lowest box first, then the longest overdue"


def test_drill_skip_puts_the_task_back_as_a_fail(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path, [KATA])
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    boxes = {
        f"{KATA}.{task}": {"box": 4, "due": "2999-01-01"} for task in ("derivative", "second_derivative")
    }
    boxes[f"{KATA}.SiLU"] = {"box": 3, "due": yesterday}
    save_progress(repo, {KATA: "done", "drill": {"boxes": boxes}})
    assert "`parameter_grads`" in run(repo, "drill").stdout, "a new task (box 0) comes before box 3"
    skipped = run(repo, "drill", "--skip")
    assert skipped.returncode == 0, skipped.stderr
    assert progress(repo)["drill"]["boxes"][f"{KATA}.parameter_grads"]["box"] == 1
    assert run(repo, "drill", "--grade").returncode == 1, "grading with no drill running must refuse"


# --- mock ---------------------------------------------------------------------------------------------


def fake(number: int, minutes: int, tasks: int = 4, bug_hunt: bool = False) -> KataInfo:
    return KataInfo(
        name=f"k{number:02d}_fake",
        title=f"Fake {number}",
        question="?",
        tasks=tuple(f"task{i}" for i in range(tasks)),
        minutes=minutes,
        bug_hunt=bug_hunt,
    )


def test_mock_asks_unseen_katas_first_one_track_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mock, "tests_for", lambda kata, tasks: ["test_x"])
    katas = [fake(3, 20), fake(4, 40), fake(11, 40), fake(12, 20), fake(15, 40), fake(19, 30, 6, True)]
    seen = {"k03_fake": "done", "k11_fake": "in progress"}
    assert [k.number for k in mock.order(katas, seen)] == [4, 12, 15, 19, 3, 11]
    picked = mock.pick(45, katas, seen)
    assert [(k.number, len(tasks)) for k, tasks in picked] == [(4, 2), (12, 4), (3, 1)], picked
    whole = mock.pick(150, katas, seen)
    assert [k.number for k, _ in whole][:4] == [4, 12, 15, 19], "tracks mix, a bug hunt comes whole"
    assert mock.pick(5, katas, seen)[0][1] == ["task0"], "even a short mock asks something"


def test_mock_interview_from_start_to_model_answers(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path, [KATA])
    learner_files = digest(repo / "katas")
    started = run(repo, "mock", "--minutes", "20")
    assert started.returncode == 0, started.stderr
    assert "kata 4" in started.stdout and "`derivative`" in started.stdout, started.stdout
    current = progress(repo)["mock"]["current"]
    folder = repo / current["folder"]
    scratch = folder / f"{KATA}.py"
    reference = (repo / "solutions" / f"{KATA}.py").read_text()
    assert scratch.read_text() == make_stub(reference), "an unseen kata must be posed as its stub"
    tasks = current["plan"][0]["tasks"]
    assert tasks[0] == "derivative" and current["plan"][0]["tests"], current
    assert run(repo, "mock").stdout.startswith("a mock interview is running")

    scratch.write_text(reference)
    graded = run(repo, "mock", "--grade")
    assert graded.returncode == 0 and "pass" in graded.stdout and "left" in graded.stdout, graded.stdout
    assert "current" in progress(repo)["mock"], "grading on demand ended the mock"

    table = progress(repo)  # the clock runs out
    table["mock"]["current"]["started"] = (datetime.now() - timedelta(hours=1)).isoformat(timespec="seconds")
    save_progress(repo, table)
    ended = run(repo, "mock", "--grade")
    assert ended.returncode == 0, ended.stderr
    assert "mock interview over: 1/1 passed in 20 of 20 min" in ended.stdout, ended.stdout
    assert "interview question: What is Autograd in PyTorch?" in ended.stdout, "no model answers shown"
    saved = progress(repo)["mock"]
    assert "current" not in saved and saved["history"][0]["results"][0]["passed"] is True
    assert digest(repo / "katas") == learner_files and KATA not in progress(repo), "katas/ was touched"
    assert run(repo, "mock", "--finish").returncode == 1, "finishing twice must refuse"


# --- bug hunts ----------------------------------------------------------------------------------------

BUG_HUNT = "k19_bug_hunt_arithmetic"
PROGRAM = '''\
"""Bug hunt: arithmetic made up for the harness's tests.

Interview question: These five functions are each wrong once: fix them.
"""


def add(a: int, b: int) -> int:
    """a + b."""
    return a + b


def sub(a: int, b: int) -> int:
    """a - b."""
    return a - b


def mul(a: int, b: int) -> int:
    """a * b."""
    return a * b


def neg(a: int) -> int:
    """-a."""
    return -a


def square(a: int) -> int:
    """a squared."""
    return a**2
'''
GRADER = f'''\
from kata_harness import load_kata

kata = load_kata("{BUG_HUNT}")


def test_addition_adds():
    assert kata.add(2, 3) == 5


def test_subtraction_subtracts():
    assert kata.sub(2, 3) == -1


def test_product_multiplies():
    assert kata.mul(2, 3) == 6


def test_negation_negates():
    assert kata.neg(2) == -2


def test_squares_are_squares():
    assert kata.square(3) == 9
'''
PLANTED = [
    ("return a + b", "return a - b", "test_addition_adds"),
    ("return a - b", "return b - a", "test_subtraction_subtracts"),
    ("return a * b", "return a + b", "test_product_multiplies"),
    ("return -a", "return a", "test_negation_negates"),
    ("return a**2", "return 2 * a", "test_squares_are_squares"),
]


def bug_hunt_repo(tmp_path: Path, planted: list[tuple[str, str, str]]) -> Path:
    repo = copy_repo(tmp_path, [])
    for folder in ("solutions", "katas", "hints", "tests/mutants"):
        (repo / folder).mkdir()
    (repo / "solutions" / f"{BUG_HUNT}.py").write_text(PROGRAM)
    (repo / "tests" / f"test_{BUG_HUNT}.py").write_text(GRADER)
    tables = "\n".join(
        f'[[planted]]\nbug = "{test}"\nfind = "{find}"\nreplace = "{replace}"\ntest = "{test}"\n'
        for find, replace, test in planted
    )
    (repo / "tests" / "mutants" / f"{BUG_HUNT}.toml").write_text(tables)
    hints = "\n".join(f'[{test}]\nsymptom = "s"\narea = "a"\nfix = "f"\n' for _, _, test in planted)
    (repo / "hints" / f"{BUG_HUNT}.toml").write_text(hints)
    return repo


def test_a_bug_hunt_ships_every_planted_bug_and_counts_the_bugs_fixed(tmp_path: Path) -> None:
    repo = bug_hunt_repo(tmp_path, PLANTED)
    wrote = run(repo, "stubgen", "--out", "katas")
    assert wrote.returncode == 0, wrote.stderr
    shipped = (repo / "katas" / f"{BUG_HUNT}.py").read_text()
    assert shipped == PROGRAM.replace("return a + b", "return a - b", 1).replace(
        "return a - b\n\n\ndef mul", "return b - a\n\n\ndef mul"
    ).replace("return a * b", "return a + b").replace("return -a", "return a").replace(
        "return a**2", "return 2 * a"
    ), shipped
    assert run(repo, "stubgen", "--check").returncode == 0

    env = {k: v for k, v in os.environ.items() if k not in ("KATA_SOURCE", "PYTHONPATH")}
    graded = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--no-progress", f"tests/test_{BUG_HUNT}.py"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=250,
    )  # fmt: skip
    assert "bugs fixed: 0 of 5" in graded.stdout, graded.stdout
    (repo / "katas" / f"{BUG_HUNT}.py").write_text(shipped.replace("return a - b", "return a + b", 1))
    graded = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--no-progress", f"tests/test_{BUG_HUNT}.py"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=250,
    )  # fmt: skip
    assert "bugs fixed: 1 of 5" in graded.stdout, graded.stdout

    hint = run(repo, "hints", "19")
    assert hint.returncode == 0, hint.stderr
    assert "test_subtraction_subtracts" in hint.stdout and "what the symptom means" in hint.stdout, (
        hint.stdout
    )


def test_each_planted_bug_must_fail_its_own_test_and_no_other(tmp_path: Path) -> None:
    entangled = [*PLANTED[:4], ("return a**2", "return a * b", "test_squares_are_squares")]  # NameError b
    repo = bug_hunt_repo(tmp_path, [*entangled[:2], ("return a * b", "return a + b", "test_negation_negates"),
                                    *entangled[3:]])  # fmt: skip
    result = run(repo, "mutants", "--jobs", "2")
    lines = result.stdout.splitlines()
    assert result.returncode == 1
    assert any("P3" in line and "NOT ITS OWN: fails test_product_multiplies" in line for line in lines), lines
    assert any("P1" in line and "killed by test_addition_adds" in line for line in lines), lines
    assert "planted bugs name tests" in result.stdout, "a test without a planted bug must be reported"


def test_a_bug_hunt_refuses_overlapping_or_ambiguous_planted_bugs(tmp_path: Path) -> None:
    repo = bug_hunt_repo(tmp_path, [*PLANTED[:4], ("return", "yield", "test_squares_are_squares")])
    result = run(repo, "stubgen", "--check")
    assert result.returncode != 0 and "occurs 5 times" in result.stderr + result.stdout


def test_shipped_file_example_reads_well() -> None:
    """The made-up program above is itself valid: the fixed file imports and its tests would pass."""
    namespace: dict = {}
    exec(compile(textwrap.dedent(PROGRAM), "program", "exec"), namespace)
    assert namespace["sub"](2, 3) == -1 and namespace["square"](3) == 9


def test_a_bug_hunts_shipped_file_holds_back_its_follow_up_questions() -> None:
    follow_ups = "Follow-up questions\n===================\n- Why a?\n- Why\n  b?\n"
    text = f'"""Bug hunt: x\n\n{follow_ups}\nGrade it.\n"""\n'
    shipped = stubgen._follow_ups_held_back(text, 19)
    assert "Why a?" not in shipped and "Why\n  b?" not in shipped, shipped
    assert "`nox -s explain -- 19` asks them" in shipped and shipped.endswith('\n\nGrade it.\n"""\n')
