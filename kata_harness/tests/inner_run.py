"""Run the graders' plugins over a folder of made-up katas in a fresh interpreter, as `pytest` would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kata_harness.source import REPO_ROOT


def ctrl_c_reaches_python() -> None:
    """A Popen preexec_fn: SIGINT at its default and unblocked, as in a terminal, so the child Python turns
    Ctrl-C into KeyboardInterrupt. A CI runner may start us with it ignored (a background job of a
    non-interactive shell ignores SIGINT), and children inherit that."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


PLUGINS = (
    "-p", "kata_harness.grading", "-p", "kata_harness.scoreboard", "-p", "pytest_cuda_marker",
    "-p", "kata_harness.isolation",
)  # fmt: skip


def write_katas(folder: Path, katas: dict[str, tuple[str, str]]) -> None:
    """`katas` maps a name like "k91_x" to (learner file, test functions); writes learner/ and test files."""
    (folder / "learner").mkdir(exist_ok=True)
    for name, (learner, tests) in katas.items():
        (folder / "learner" / f"{name}.py").write_text(learner)
        header = f"from kata_harness import load_kata\n\nkata = load_kata({name!r})\n\n"
        (folder / f"test_{name}.py").write_text(header + tests)


def grade(
    folder: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Grade `folder` (learner/ + test files) in a fresh interpreter; the run and its per-test records."""
    command = [sys.executable, "-m", "pytest", *PLUGINS, "-p", "no:randomly", "-p", "no:cacheprovider"]
    command += ["--kata-json=results.json", "--rootdir", str(folder), *args]
    env = {**os.environ, "KATA_SOURCE": str(folder / "learner"), "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    results = folder / "results.json"
    results.unlink(missing_ok=True)
    run = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    return run, json.loads(results.read_text()) if results.exists() else []


def assert_lines(output: str, *patterns: str) -> None:
    """Each pattern matches some line of `output`, in order (fnmatch syntax)."""
    pytest.LineMatcher(output.splitlines()).fnmatch_lines(list(patterns))
