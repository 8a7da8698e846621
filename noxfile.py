"""pytorch-katas sessions. `nox` grades your katas; `nox -l` lists the rest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.sessions = ["check"]
nox.options.reuse_venv = "yes"
# pip (not uv) installs: it honours pip.conf and PIP_CONSTRAINT, which CI uses to pin the CPU torch.
nox.options.default_venv_backend = "virtualenv"
nox.options.error_on_external_run = True

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT))  # the sessions reuse the harness's kata catalog and paths

from kata_harness.workflow import CHECK_PYTHON  # noqa: E402 - importable only after the line above

PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
# A devcontainer image already holds torch: let the venvs see it instead of downloading it again.
VENV_PARAMS = ["--system-site-packages"] if os.environ.get("KATAS_SYSTEM_SITE_PACKAGES") == "1" else []


def install(session: nox.Session, *groups: str) -> None:
    """Install the runtime dependencies and `groups`, skipping pip when nothing changed since last time."""
    requirements = [*PYPROJECT["project"]["dependencies"], *nox.project.dependency_groups(PYPROJECT, *groups)]
    wanted = json.dumps([requirements, os.environ.get("PIP_CONSTRAINT", ""), VENV_PARAMS])
    stamp = Path(session.virtualenv.location) / ".katas-installed"
    if stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
        return
    session.install(*requirements)
    stamp.write_text(wanted, encoding="utf-8")


def pytest_args(posargs: list[str]) -> list[str]:
    """Turn kata selectors ("4", "k04", "k04_autograd") into their test files; pass the rest to pytest."""
    from kata_harness.catalog import UnknownKata, find_kata, is_kata_selector

    args: list[str] = []
    for arg in posargs:
        if is_kata_selector(arg):
            try:
                args.append(str(find_kata(arg).test_file.relative_to(ROOT)))
            except UnknownKata as error:
                raise SystemExit(str(error)) from None
        else:
            args.append("--kata-json" if arg == "--json" else arg)
    return args


@nox.session(venv_params=VENV_PARAMS)
def check(session: nox.Session) -> None:
    """Grade your katas and show the scoreboard: `nox -s check -- 4` grades kata 4 alone."""
    try:
        args = pytest_args(session.posargs)
    except SystemExit as error:
        session.error(str(error))
    install(session, "test")
    session.run("python", "-m", "pytest", *args)


def harness(session: nox.Session, module: str, python: str = sys.executable) -> None:
    """Run `python -m kata_harness.<module>` with the session's arguments; a refusal aborts the session
    with the module's own one-line reason rather than nox's "Command ... failed" banner."""
    command = [python, "-m", f"kata_harness.{module}", *session.posargs]
    result = subprocess.run(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        session.error(result.stderr.strip() or f"{module} exited with code {result.returncode}")
    if result.stderr:
        print(result.stderr, end="", file=sys.stderr)


@nox.session(python=False)
def hint(session: nox.Session) -> None:
    """Next hint for the task you are on in kata 4: `nox -s hint -- 4`; all of them: `-- 4 --all`."""
    harness(session, "hints")


@nox.session(python=False)
def compare(session: nox.Session) -> None:
    """Diff kata 4 against the reference, function by function: `nox -s compare -- 4` (asks until green)."""
    harness(session, "compare")


@nox.session(python=False)
def reset(session: nox.Session) -> None:
    """Restore kata 4's pristine stub after backing your file up to .katas-backup/: `nox -s reset -- 4`."""
    harness(session, "reset")


@nox.session(python=False)
def watch(session: nox.Session) -> None:
    """Re-grade each kata as you save it, until Ctrl-C: `nox -s watch` (`-- --poll` where saves go unseen)."""
    from kata_harness.catalog import UnknownKata, find_kata, is_kata_selector

    for arg in session.posargs:  # a typo fails here, in one line, before any venv is built
        if is_kata_selector(arg):
            try:
                find_kata(arg)
            except UnknownKata as error:
                session.error(str(error))
    if not CHECK_PYTHON.exists():  # watch runs in the check venv (torch, pytest, watchfiles): build it once
        noxfile = str(ROOT / "noxfile.py")
        session.run(sys.executable, "-m", "nox", "-f", noxfile, "-s", "check", "--install-only")
    session.run(str(CHECK_PYTHON), "-m", "kata_harness.watch", *session.posargs)


@nox.session(venv_params=VENV_PARAMS)
def verify(session: nox.Session) -> None:
    """Prove the graders: ruff, stubs in sync, solutions and alternatives green, stubs red, mutants killed."""
    install(session, "verify")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("python", "-m", "kata_harness.stubgen", "--check")
    with tempfile.TemporaryDirectory(prefix="katas-verify-") as tmp:
        for seed in ("1", "2"):  # two different random orders: no test may depend on another
            results = f"{tmp}/solutions-{seed}.json"
            session.run(
                "python", "-m", "pytest", "-q", "-p", "randomly", f"--randomly-seed={seed}",
                "--kata-json", results, "--no-progress",
                env={"KATA_SOURCE": "solutions"}, success_codes=[0, 1],
            )  # fmt: skip
            session.run("python", "-m", "kata_harness.verify", "solutions", results)
        # The graders accept correct code other than the reference: an independent second solution.
        results = f"{tmp}/alternatives.json"
        session.run(
            "python", "-m", "pytest", "-q", "--kata-json", results, "--no-progress",
            env={"KATA_SOURCE": "tests/alternatives"}, success_codes=[0, 1],
        )  # fmt: skip
        session.run("python", "-m", "kata_harness.verify", "alternatives", results)
        stubs = f"{tmp}/stubs"
        session.run("python", "-m", "kata_harness.stubgen", "--out", stubs, silent=True)
        results = f"{tmp}/stubs.json"
        session.run(
            "python", "-m", "pytest", "-q", "--tb=no", "--kata-json", results, "--no-progress",
            env={"KATA_SOURCE": stubs}, success_codes=[0, 1],
        )  # fmt: skip
        session.run("python", "-m", "kata_harness.verify", "stubs", results)
    session.run("python", "-m", "kata_harness.mutants")  # and reject wrong code: every mutant fails
    # The harness's own tests start fresh interpreters that import torch: give them more than 10 s.
    session.run("python", "-m", "pytest", "-q", "--timeout=300", "kata_harness/tests", *session.posargs)


@nox.session(venv_params=VENV_PARAMS)
def mutants(session: nox.Session) -> None:
    """Prove the graders reject wrong code: every mutant in tests/mutants/ must fail (`-- 8` for kata 8)."""
    install(session, "test")
    session.run("python", "-m", "kata_harness.mutants", *session.posargs)


@nox.session(python=False)
def stubs(session: nox.Session) -> None:
    """Maintainers: regenerate katas/ from solutions/ (overwrites katas/: never run it on your own work)."""
    session.run(sys.executable, "-m", "kata_harness.stubgen", "--out", "katas", *session.posargs)


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Time a warm `nox -s check` against `python -m pytest` on the same tests; print the ratio."""
    runs = int(session.posargs[0]) if session.posargs else 3
    env = {**os.environ, "KATA_SOURCE": "solutions"}
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run([sys.executable, "-m", "nox", "-s", "check"], **quiet)  # build or warm the venv

    def best_of(command: list[str]) -> float:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(command, **quiet)
            times.append(time.perf_counter() - start)
        return min(times)

    plain = best_of([str(CHECK_PYTHON), "-m", "pytest", "-q", "--no-progress"])
    graded = best_of([sys.executable, "-m", "nox", "-s", "check", "--", "-q", "--no-progress"])
    session.log(f"python -m pytest: {plain:.2f} s   nox -s check: {graded:.2f} s   (best of {runs})")
    session.log(f"ratio: {graded / plain:.2f} (target <= 1.5)")
