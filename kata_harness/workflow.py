"""What the commands hint, compare, reset, watch, drill and mock share: paths, colour, errors, grading."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import tokenize
from pathlib import Path
from typing import Any, NoReturn

from kata_harness.catalog import KataInfo, UnknownKata, find_kata
from kata_harness.source import REPO_ROOT, SOURCE_ENV, display_path, missing_kata_message

KATAS = REPO_ROOT / "katas"
HINTS = REPO_ROOT / "hints"
BACKUPS = REPO_ROOT / ".katas-backup"
HINT_STATE = REPO_ROOT / ".katas-hints.json"
CHECK_PYTHON = REPO_ROOT / ".nox" / "check" / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
# What grading imports; an interpreter without all of them (nox's own, say) cannot grade.
GRADING_MODULES = ("torch", "numpy", "pytest", "pytest_timeout", "hypothesis", "pytest_cuda_marker")
PASSING = ("passed", "skipped")

_STYLES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


def use_colour() -> bool:
    """ANSI colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def paint(text: str, *styles: str) -> str:
    """`text` in the given styles ("bold", "red", ...) where colour is on, else unchanged."""
    if not styles or not use_colour():
        return text
    codes = ";".join(_STYLES[style] for style in styles)
    return f"\033[{codes}m{text}\033[0m"


def fail(message: str, code: int = 1) -> int:
    """Print the one line that explains a refusal, on stderr, and return the exit code to use."""
    print(message, file=sys.stderr)
    return code


def number(kata: KataInfo) -> str:
    """The kata's number as a learner types it: "4" for k04_autograd."""
    return str(kata.number)


def learner_file(kata: KataInfo) -> Path:
    """The learner's copy of the kata: always katas/, whatever KATA_SOURCE says."""
    return KATAS / f"{kata.name}.py"


def missing_message(kata: KataInfo) -> str:
    """The line for a kata file the learner deleted: the same words the scoreboard uses."""
    return missing_kata_message(kata.name, learner_file(kata))


class SourceUnreadable(Exception):
    """A Python file that cannot be read or decoded; the message is one line naming the file and line."""


def read_source(path: Path) -> str:
    """A Python file's text, decoded as Python decodes it: UTF-8, a UTF-8 BOM or a `# -*- coding -*-` line.

    Raises SourceUnreadable where Python could not read it either (a Latin-1 byte in a UTF-8 file, say).
    """
    where = display_path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SourceUnreadable(f"{where}: cannot read it ({error.strerror or error})") from None
    declared = None
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError as error:  # a bad coding line, or undecodable bytes in the first two lines
        encoding, declared = "utf-8", str(error.msg)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        name = "UTF-8" if encoding.startswith("utf-8") else encoding
        raise SourceUnreadable(
            f"{where}:{line}: byte 0x{data[error.start]:02x} is not valid {name} - save the file as UTF-8"
        ) from None
    if declared is not None:
        raise SourceUnreadable(f"{where}:1: {declared}")
    return text


class GradingUnavailable(Exception):
    """The kata could not be graded here; the message says why in one line."""


def grading_python() -> str | None:
    """An interpreter that can grade: the `check` session's venv, else this one if it has torch and pytest."""
    if CHECK_PYTHON.exists():
        return str(CHECK_PYTHON)
    if all(importlib.util.find_spec(module) for module in GRADING_MODULES):
        return sys.executable
    return None


def grade(
    kata: KataInfo,
    *,
    stop_at_first_failure: bool = False,
    source: Path | None = None,
    tests: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Run the kata's tests on katas/ (or the folder `source`) quietly; return the scoreboard's records.

    `tests` names the test functions to run (default: all). Progress is not saved (this is a look, not
    a graded run). Raises GradingUnavailable when no interpreter here can grade, or when the run produced
    no results.
    """
    python = grading_python()
    if python is None:
        raise GradingUnavailable("no interpreter with torch and pytest found; run `nox -s check` once")
    env = {key: value for key, value in os.environ.items() if key != SOURCE_ENV}
    if source is not None:
        env[SOURCE_ENV] = str(source)
    test_file = str(kata.test_file.relative_to(REPO_ROOT))
    targets = [f"{test_file}::{name}" for name in tests] if tests is not None else [test_file]
    with tempfile.TemporaryDirectory(prefix="katas-grade-") as tmp:
        results = Path(tmp) / "results.json"
        command = [
            python, "-m", "pytest", "-q", "--tb=no", "-p", "no:cacheprovider",
            "--kata-json", str(results), "--no-progress", *(["-x"] if stop_at_first_failure else []),
            *targets,
        ]  # fmt: skip
        try:
            run = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        except OSError as error:  # e.g. a .nox/check copied from another machine
            raise GradingUnavailable(f"cannot run {python}: {error.strerror or error}") from None
        if not results.exists():
            lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
            detail = lines[-1] if lines else f"pytest exited with code {run.returncode}"
            raise GradingUnavailable(f"grading kata {number(kata)} gave no results: {detail}")
        records: list[dict[str, Any]] = json.loads(results.read_text(encoding="utf-8"))
    if not records:
        raise GradingUnavailable(f"{display_path(kata.test_file)} collected no tests")
    return records


def failures(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of tests that did not pass (skips are not failures)."""
    return [record for record in records if record["outcome"] not in PASSING]


def tally(records: list[dict[str, Any]]) -> str:
    """ "12/15 tests pass" for a run's records."""
    graded = [record for record in records if record["outcome"] != "skipped"]
    passed = sum(record["outcome"] == "passed" for record in graded)
    return f"{passed}/{len(graded)} tests pass"


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose mistakes cost the learner one line, not a usage block."""

    def error(self, message: str) -> NoReturn:
        raise SystemExit(fail(f"{self.prog}: {message} (see --help)", 2))


def select(selector: str) -> KataInfo:
    """The kata `selector` names; raises SystemExit(2) after printing the one line that lists valid ones."""
    try:
        return find_kata(selector)
    except UnknownKata as error:
        raise SystemExit(fail(str(error), 2)) from None


def prompt(what: str) -> str:
    return f"The kata does not pass yet; show {what} anyway? [y/N] "


def confirmed(kata: KataInfo, what: str) -> tuple[bool, str]:
    """(show `what`?, why not): grade the kata; if it fails, ask on a terminal, refuse elsewhere. The spoiler
    guard of `compare` (what = "the reference") and `explain` (what = "the model answers")."""
    print(paint(f"grading kata {number(kata)} before showing {what}...", "dim"), flush=True)
    try:
        records = grade(kata, stop_at_first_failure=True)
    except GradingUnavailable as error:
        status = f"cannot tell whether kata {number(kata)} passes ({error})"
    else:
        failing = [record for record in failures(records) if record["outcome"] != "not run"]
        if not failing:
            return True, ""
        status = f"kata {number(kata)} does not pass yet ({failing[0]['name']} fails)"
    if not sys.stdin.isatty():
        return False, f"{status}: finish it first, or add --peek to see {what} anyway"
    print(status + ".")
    try:
        answer = input(prompt(what))
    except EOFError:
        answer = ""
    return answer.strip().lower() in ("y", "yes"), f"not shown: {what} stay a surprise"


def wrap(text: str, indent: str = "    ") -> str:
    """Re-flow a hint or an answer to the terminal: paragraphs and "- " list items keep their own lines."""
    width = max(40, min(shutil.get_terminal_size().columns, 100))
    blocks: list[list[str]] = []
    for line in text.strip().splitlines():
        stripped = line.strip()
        if not stripped:
            blocks.append([])
        elif not blocks or not blocks[-1] or stripped.startswith(("- ", "* ")):
            blocks.append([stripped])
        else:
            blocks[-1].append(stripped)
    paragraphs = [" ".join(block) for block in blocks if block]
    return "\n".join(
        textwrap.fill(p, width, initial_indent=indent, subsequent_indent=indent + "  " * p.startswith("- "))
        for p in paragraphs
    )
