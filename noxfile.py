"""pytorch-katas sessions. `nox` grades your katas; `nox -l` lists the rest."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nox

nox.needs_version = ">=2025.2.9"
nox.options.sessions = ["check"]
nox.options.reuse_venv = "yes"
# pip (not uv) installs: it honours pip.conf and PIP_CONSTRAINT, which CI uses to pin the CPU torch.
nox.options.default_venv_backend = "virtualenv"
nox.options.error_on_external_run = True

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT))  # the sessions reuse the harness's kata catalog and paths

from kata_harness.catalog import all_katas  # noqa: E402 - importable only after the line above
from kata_harness.workflow import CHECK_PYTHON  # noqa: E402

PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
# A devcontainer image already holds torch: let the venvs see it instead of downloading it again.
VENV_PARAMS = ["--system-site-packages"] if os.environ.get("KATAS_SYSTEM_SITE_PACKAGES") == "1" else []


# Which torch build to install: "auto" (the default) takes PyTorch's CPU wheels on a Linux machine without an
# NVIDIA driver, where PyPI's torch is a CUDA build of several GB; "cpu" always takes the CPU wheels;
# "cuda" (or "pypi") installs torch the way pip is set up to, with no extra index.
TORCH_ENV = "KATAS_TORCH"
TORCH_CHOICES = ("auto", "cpu", "cuda", "pypi")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Signs of an NVIDIA driver besides `nvidia-smi` on PATH: its kernel module, and WSL 2's nvidia-smi.
NVIDIA_FILES = (Path("/proc/driver/nvidia/version"), Path("/usr/lib/wsl/lib/nvidia-smi"))
# pip settings that already say where packages come from: "auto" then leaves torch to them.
PIP_SOURCES = ("constraint", "index-url", "extra-index-url", "find-links", "no-index")
PLUGIN_DIR = ROOT / "pytest-cuda-marker"  # our pytest plugin, a package of its own: pip installs it by path
VENV_STAMP = ".katas-venv"  # what built the venv: venv_identity()
INSTALL_STAMP = ".katas-installed"  # what was installed into it


def plugin_fingerprint() -> str:
    """A hash of the plugin's source: pip reinstalls a folder only when the install stamp says it changed."""
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "pytest_cuda_marker.py"):
        digest.update((PLUGIN_DIR / name).read_bytes())
    return digest.hexdigest()


def torch_choice() -> str:
    return os.environ.get(TORCH_ENV, "").strip().lower() or "auto"


def venv_identity() -> dict[str, Any]:
    """What a venv built now is made of: the Python nox runs on (virtualenv builds on its base install,
    whichever venv or pipx holds nox itself) and the venv options."""
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return {"python": python, "base": sys.base_prefix, "venv_params": VENV_PARAMS}


def _pyvenv_identity(location: Path) -> dict[str, Any] | None:
    """venv_identity() as far as pyvenv.cfg tells it, for a venv built before VENV_STAMP existed."""
    try:
        lines = (location / "pyvenv.cfg").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    config = {key.strip(): value.strip() for key, _, value in (line.partition("=") for line in lines)}
    version = config.get("version") or ".".join(config.get("version_info", "").split(".")[:3])
    system = config.get("include-system-site-packages", "").lower() == "true"
    return {
        "python": f"{config.get('implementation', platform.python_implementation())} {version}",
        "base": config.get("base-prefix", sys.base_prefix),  # virtualenv records it, venv does not
        "venv_params": ["--system-site-packages"] if system else [],
    }


def installed_torch(location: Path) -> str | None:
    """The version of the torch installed in the venv itself ("2.9.1+cpu"), or None."""
    patterns = ("lib/python*/site-packages/torch-*.dist-info", "Lib/site-packages/torch-*.dist-info")
    found = [info.name for pattern in patterns for info in location.glob(pattern)]
    return found[0].removeprefix("torch-").removesuffix(".dist-info") if found else None


def stale_reason(location: Path) -> str | None:
    """Why the venv at `location` must be rebuilt before use, or None: another Python or other venv options
    built it (nox reuses a venv whatever built it), or its torch is not the build KATAS_TORCH asks for."""
    now = venv_identity()
    try:
        built: Any = json.loads((location / VENV_STAMP).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not (location / INSTALL_STAMP).exists():
            return None  # nothing installed yet: nox has just built it
        built = _pyvenv_identity(location)
    except (OSError, ValueError):
        built = None
    if not isinstance(built, dict):
        return "nothing says which Python built it"
    if (built.get("python"), built.get("base")) != (now["python"], now["base"]):
        return (
            f"it was built with {built.get('python')} from {built.get('base')}, "
            f"and nox now runs {now['python']} from {now['base']}"
        )
    if built.get("venv_params") != now["venv_params"]:
        return f"KATAS_SYSTEM_SITE_PACKAGES changed (venv_params {built.get('venv_params')} -> {VENV_PARAMS})"
    # An explicit KATAS_TORCH that the torch in the venv does not match: pip alone would keep that torch.
    torch, choice = installed_torch(location), torch_choice()
    if torch is None or sys.platform == "darwin":  # macOS: one build, CPU and MPS, with no +cpu tag
        return None
    if choice == "cpu" and "+cpu" not in torch:
        return f"it holds torch {torch}, and {TORCH_ENV}=cpu asks for the CPU build"
    if choice == "cuda" and "+cpu" in torch:
        return f"it holds torch {torch}, and {TORCH_ENV}=cuda asks for PyPI's CUDA build"
    return None


def on_linux() -> bool:
    return sys.platform.startswith("linux")


def nvidia_driver() -> bool:
    """Whether this machine has an NVIDIA driver, and so can use PyPI's CUDA build of torch."""
    return any(path.exists() for path in NVIDIA_FILES) or shutil.which("nvidia-smi") is not None


def torch_installed(session: nox.Session) -> bool:
    """Whether the venv already imports torch: its own, or the system's (KATAS_SYSTEM_SITE_PACKAGES)."""
    code = "import importlib.util; print(importlib.util.find_spec('torch') is not None)"
    # run_install, not run: it runs under --install-only too (scripts/setup.sh), like the installs it guides.
    return str(session.run_install("python", "-c", code, silent=True, log=False)).strip() == "True"


def pip_source(session: nox.Session) -> str | None:
    """The pip setting, environment variable or pip config, that already says where packages come from."""
    for name in PIP_SOURCES:
        variable = "PIP_" + name.upper().replace("-", "_")
        if os.environ.get(variable):
            return variable
    command = ["python", "-m", "pip", "config", "list"]
    output = session.run_install(*command, silent=True, log=False, success_codes=[0, 1])
    for line in str(output).splitlines():
        key = line.partition("=")[0].strip()
        if key.rpartition(".")[2] in PIP_SOURCES:
            return f"pip's config {key}"
    return None


def torch_index(session: nox.Session, has_torch: bool) -> tuple[str | None, str | None]:
    """(the index to install torch from, None for pip's own; a one-line notice to log, or None)."""
    choice = torch_choice()
    if has_torch or choice in ("cuda", "pypi"):
        return None, None
    if choice == "cpu":
        return CPU_INDEX, f"{TORCH_ENV}=cpu: installing the CPU build of torch from {CPU_INDEX}"
    if not on_linux() or nvidia_driver():  # on macOS and Windows PyPI's torch is the CPU build already
        return None, None
    source = pip_source(session)
    if source:
        return None, (
            f"no NVIDIA driver found, but {source} decides where torch comes from; "
            f"{TORCH_ENV}=cpu installs PyTorch's CPU build instead"
        )
    return CPU_INDEX, (
        f"no NVIDIA driver found: installing the CPU build of torch from {CPU_INDEX} (hundreds of MB, not "
        f"GBs); {TORCH_ENV}=cuda installs PyPI's CUDA build instead"
    )


def install(session: nox.Session, *groups: str) -> None:
    """Install the runtime dependencies and `groups`, skipping pip when nothing changed since last time.

    A venv built by another Python, with other venv options or for another torch build is rebuilt first.
    """
    if torch_choice() not in TORCH_CHOICES:
        session.error(f"{TORCH_ENV}={os.environ[TORCH_ENV]!r}: choose one of {', '.join(TORCH_CHOICES)}")
    venv = session.virtualenv
    location = Path(venv.location)
    where = os.path.relpath(location, ROOT) if location.is_relative_to(ROOT) else str(location)
    reason = stale_reason(location)
    if reason:
        session.log(f"rebuilding {where}: {reason}")
        venv.reuse_existing = False  # nox then deletes the folder and builds the venv afresh
        venv.create()
    identity = json.dumps(venv_identity())
    venv_stamp = location / VENV_STAMP
    if not venv_stamp.exists() or venv_stamp.read_text(encoding="utf-8") != identity:
        venv_stamp.write_text(identity, encoding="utf-8")

    requirements = [*PYPROJECT["project"]["dependencies"], *nox.project.dependency_groups(PYPROJECT, *groups)]
    constraint = os.environ.get("PIP_CONSTRAINT", "")
    wanted = json.dumps([requirements, plugin_fingerprint(), constraint, VENV_PARAMS])
    stamp = location / INSTALL_STAMP
    if stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
        return
    torch = [requirement for requirement in requirements if re.match(r"torch\b", requirement)]
    has_torch = torch_installed(session)
    index, notice = torch_index(session, has_torch) if torch else (None, None)
    names = ", ".join(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0] for requirement in requirements)
    if torch and not has_torch:
        session.log(
            f"installing {names} into {where}: torch alone is hundreds of MB (GBs for a CUDA build), "
            "so this takes a few minutes, once"
        )
    else:
        session.log(f"installing {names} into {where}" + (" (torch is there already)" if torch else ""))
    if notice:
        session.log(notice)
    # silent=False: pip's own progress bars show each download as it happens.
    if index and torch:  # torch from that index alone: no same-version CUDA wheel on PyPI can win
        session.install("--index-url", index, *torch, silent=False)
    session.install(*requirements, str(PLUGIN_DIR), silent=False)
    stamp.write_text(wanted, encoding="utf-8")


# pytest options that take no value: the word after one is checked as a kata or a path. The word after any
# other option may be that option's value (`-k silu`, `-p no:randomly`) and goes to pytest unchecked.
PYTEST_FLAGS = frozenset({
    "--exitfirst", "--strict-config", "--strict-markers", "--strict", "--pdb", "--trace", "--runxfail",
    "--lf", "--last-failed", "--ff", "--failed-first", "--nf", "--new-first", "--cache-clear", "--sw",
    "--stepwise", "--sw-skip", "--stepwise-skip", "--sw-reset", "--stepwise-reset", "--verbose", "--quiet",
    "--no-header", "--no-summary", "--showlocals", "--no-showlocals", "--full-trace", "--disable-warnings",
    "--collect-only", "--co", "--setup-only", "--setup-show", "--setup-plan", "--problem-lines",
    "--no-progress",
})  # fmt: skip


def _complete_option(option: str) -> bool:
    """Whether a pytest option needs no next word: a flag (`-x`, `-vv`, `--lf`) or `--option=value`."""
    return "=" in option or option in PYTEST_FLAGS or re.fullmatch(r"-[xsvql]+", option) is not None


def pytest_args(posargs: list[str]) -> list[str]:
    """Turn kata selectors ("4", "k04", "k04_autograd") into their test files; pass the rest to pytest.

    A word that is no option, option value, existing path or kata - "README" from VS Code's "Grade the
    open kata" on README.md, or an empty argument, which pytest reads as "everything here" - raises
    SystemExit with one line that lists the katas.
    """
    from kata_harness.catalog import UnknownKata, find_kata, is_kata_selector

    args: list[str] = []
    value_next = False  # the previous word was an option that may take this word as its value
    for arg in posargs:
        if arg.startswith("-") or value_next or "--pyargs" in posargs:  # --pyargs: words name packages
            args.append("--kata-json" if arg == "--json" else arg)
            value_next = arg.startswith("-") and not value_next and not _complete_option(arg)
        elif arg.strip() and not is_kata_selector(arg) and (ROOT / arg.split("::")[0]).exists():
            args.append(arg)
        else:
            try:
                args.append(str(find_kata(arg).test_file.relative_to(ROOT)))
            except UnknownKata as error:
                raise SystemExit(str(error)) from None
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
def explain(session: nox.Session) -> None:
    """Model answers to kata 4's interview question and its follow-ups: `nox -s explain -- 4` (asks first)."""
    harness(session, "explain")


@nox.session(python=False)
def drill(session: nox.Session) -> None:
    """Spaced repetition: rewrite a task you passed, in a scratch copy; `-- --grade`, `-- --list`."""
    harness(session, "drill")


@nox.session(python=False)
def mock(session: nox.Session) -> None:
    """Mock interview against the clock: `nox -s mock -- --minutes 45`; then `-- --grade` / `-- --finish`."""
    harness(session, "mock")


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
    session.run("python", "-m", "kata_harness.explain", "--check")  # every follow-up has its answer
    with tempfile.TemporaryDirectory(prefix="katas-verify-") as tmp:
        for seed in ("1", "2"):  # two different random orders: no test may depend on another
            results = f"{tmp}/solutions-{seed}.json"
            session.run(
                "python", "-m", "pytest", "-q", "-p", "randomly", f"--randomly-seed={seed}",
                "--kata-json", results, "--no-progress",
                env={"KATA_SOURCE": "solutions"}, success_codes=[0, 1],
            )  # fmt: skip
            session.run("python", "-m", "kata_harness.verify", "solutions", results)
        # The graders accept correct code other than the reference: an independent second solution of
        # every kata (for a bug hunt, the shipped program fixed by someone who never saw the reference).
        alternatives = ROOT / "tests" / "alternatives"
        lacking = [kata.name for kata in all_katas() if not (alternatives / kata.solution.name).exists()]
        if lacking:
            session.error(f"no alternative solution in tests/alternatives/ for {', '.join(lacking)}")
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
    # pytest-cuda-marker's own tests, as the package they test: its folder's config, not the repo's.
    plugin = str(PLUGIN_DIR.relative_to(ROOT))
    session.run("python", "-m", "pytest", "-q", "-c", f"{plugin}/pyproject.toml", "--rootdir", plugin, plugin)
    # The harness's own tests start fresh interpreters that import torch: give them more than 10 s.
    session.run("python", "-m", "pytest", "-q", "--timeout=300", "kata_harness/tests", *session.posargs)


@nox.session(venv_params=VENV_PARAMS)
def mutants(session: nox.Session) -> None:
    """Prove the graders reject wrong code: every mutant in tests/mutants/ must fail (`-- 8` for kata 8)."""
    install(session, "test")
    session.run("python", "-m", "kata_harness.mutants", *session.posargs)


@nox.session(python=False)
def stubs(session: nox.Session) -> None:
    """Maintainers: regenerate katas/ from solutions/ (a file that differs is backed up to .katas-backup/)."""
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
