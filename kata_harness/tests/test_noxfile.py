"""noxfile.py's own logic: which words `nox -s check --` accepts, and how `install` builds the venv.

The noxfile is loaded with a stand-in for the `nox` module (the harness's test environment has no nox, and
these tests must not build venvs or reach a package index): sessions are plain functions, and a fake
session records what it was asked to log, install and run.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from kata_harness.catalog import all_katas

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
VALID = ", ".join(f"{kata.number} ({kata.name})" for kata in all_katas())


class Aborted(Exception):
    """What the fake session's `error` raises, as nox's raises its own."""


def dependency_groups(pyproject: dict[str, Any], *groups: str) -> tuple[str, ...]:
    """nox.project.dependency_groups, for the plain strings and include-group tables pyproject.toml uses."""
    tables = pyproject["dependency-groups"]

    def expand(group: str) -> list[str]:
        out: list[str] = []
        for item in tables[group]:
            out.extend(expand(item["include-group"]) if isinstance(item, dict) else [item])
        return out

    return tuple(requirement for group in groups for requirement in expand(group))


def fake_nox() -> types.ModuleType:
    module = types.ModuleType("nox")
    module.options = types.SimpleNamespace()  # type: ignore[attr-defined]
    module.Session = object  # type: ignore[attr-defined]
    module.project = types.SimpleNamespace(  # type: ignore[attr-defined]
        load_toml=lambda path: tomllib.loads(Path(path).read_text(encoding="utf-8")),
        dependency_groups=dependency_groups,
    )

    def session(*args: Any, **kwargs: Any) -> Any:
        if args and callable(args[0]):
            return args[0]
        return lambda function: function

    module.session = session  # type: ignore[attr-defined]
    return module


@pytest.fixture
def noxfile(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """noxfile.py, freshly imported with the stand-in nox and without the variables that steer it."""
    for name in ("KATAS_TORCH", "KATAS_SYSTEM_SITE_PACKAGES", "PIP_CONSTRAINT", "PIP_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setitem(sys.modules, "nox", fake_nox())
    monkeypatch.setattr(sys, "path", list(sys.path))  # the noxfile puts the repository first
    spec = importlib.util.spec_from_file_location("katas_noxfile", REPO / "noxfile.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "on_linux", lambda: False)  # the same on every machine: see linux_without_gpu
    return module


# --- nox -s check -- WORDS ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["4"], ["tests/test_k04_autograd.py"]),
        (["k04", "-x", "-k", "silu"], ["tests/test_k04_autograd.py", "-x", "-k", "silu"]),
        (["test_k04_autograd", "--problem-lines"], ["tests/test_k04_autograd.py", "--problem-lines"]),
        (["--json", "out/results.json"], ["--kata-json", "out/results.json"]),  # a path not there yet
        (["-p", "no:randomly", "-vv"], ["-p", "no:randomly", "-vv"]),
        (["--tb=short", "tests/test_k01_pytorch_features.py::test_x"],
         ["--tb=short", "tests/test_k01_pytorch_features.py::test_x"]),
        (["kata_harness/tests"], ["kata_harness/tests"]),
    ],
)  # fmt: skip
def test_check_passes_katas_options_their_values_and_paths(
    noxfile: types.ModuleType, words: list[str], expected: list[str]
) -> None:
    assert noxfile.pytest_args(words) == expected


@pytest.mark.parametrize(
    "words",
    [
        ["README", "--problem-lines"],  # "Grade the open kata" with README.md open
        ["noxfile", "--problem-lines"],
        [""],  # pytest would read it as "everything here", the harness's own tests included
        ["   "],
        ["-x", "ktas"],  # a flag takes no value: the word after it is checked
        ["4", "k99"],
    ],
)
def test_check_refuses_a_word_that_is_no_kata_option_or_path(
    noxfile: types.ModuleType, words: list[str]
) -> None:
    with pytest.raises(SystemExit) as refusal:
        noxfile.pytest_args(words)
    message = str(refusal.value)
    assert "\n" not in message and message.endswith(f"choose one of: {VALID}")


def test_check_refuses_before_any_install(noxfile: types.ModuleType, tmp_path: Path) -> None:
    session = FakeSession(tmp_path / "venv", posargs=["README", "--problem-lines"])
    with pytest.raises(Aborted, match=r"^no kata 'README'; choose one of: 1 \(k01_"):
        noxfile.check(session)
    assert session.calls == []


def open_kata_task_posargs(label: str, opened: str) -> list[str]:
    """What a .vscode/tasks.json task passes its nox session when `opened` is the active editor's file."""
    import json5

    tasks = json5.loads((REPO / ".vscode" / "tasks.json").read_text(encoding="utf-8"))["tasks"]
    args = next(task["args"] for task in tasks if task["label"] == label)
    stem = Path(opened).stem
    return [arg.replace("${fileBasenameNoExtension}", stem) for arg in args[args.index("--") + 1 :]]


def test_grade_the_open_kata_answers_at_once_on_a_file_that_is_no_kata(noxfile: types.ModuleType) -> None:
    with pytest.raises(SystemExit, match=r"^no kata 'README'; choose one of: "):
        noxfile.pytest_args(open_kata_task_posargs("Grade the open kata", "README.md"))
    for opened in ("katas/k04_autograd.py", "tests/test_k04_autograd.py", "solutions/k04_autograd.py"):
        args = noxfile.pytest_args(open_kata_task_posargs("Grade the open kata", opened))
        assert args[0] == "tests/test_k04_autograd.py", opened


def pytest_option_arity() -> dict[str, bool]:
    """{option: takes a value} for every option `pytest --help` lists here, plugins included."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    arity: dict[str, bool] = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^  (-\S.*?)(?:\s{2,}|$)", line)
        if not match:
            continue
        for spelling in match[1].split(", "):
            option, _, value = spelling.replace("=", " ").partition(" ")
            arity[option] = bool(value)
    return arity


@pytest.mark.timeout(60)
def test_the_options_taken_for_flags_take_no_value(noxfile: types.ModuleType) -> None:
    """A flag that in truth took a value would make its value checked as a kata: it must take none."""
    arity = pytest_option_arity()
    assert arity.get("-k") is True and arity.get("-x") is False, "could not read pytest --help"
    flags = [*noxfile.PYTEST_FLAGS, *(f"-{letter}" for letter in "xsvql")]
    assert {flag: arity.get(flag) for flag in flags} == dict.fromkeys(flags, False)


# --- install ------------------------------------------------------------------------------------------


class FakeVenv:
    """nox's VirtualEnv as install() uses it: a location, and create() that honours reuse_existing."""

    def __init__(self, location: Path) -> None:
        self.location = str(location)
        self.reuse_existing = True
        self.created = 0
        location.mkdir(parents=True, exist_ok=True)

    def create(self) -> None:
        if not self.reuse_existing:
            shutil.rmtree(self.location)
            Path(self.location).mkdir()
            self.created += 1


class FakeSession:
    def __init__(self, location: Path, posargs: list[str] | None = None, has_torch: bool = False) -> None:
        self.virtualenv = FakeVenv(location)
        self.posargs = posargs or []
        self.has_torch = has_torch
        self.pip_config = ""
        self.calls: list[tuple[str, tuple[str, ...], dict[str, Any]]] = []

    def log(self, message: str) -> None:
        self.calls.append(("log", (message,), {}))

    def error(self, message: str) -> None:
        raise Aborted(message)

    def install(self, *args: str, **kwargs: Any) -> None:
        self.calls.append(("install", args, kwargs))

    def run_install(self, *args: str, **kwargs: Any) -> str:
        self.calls.append(("run", args, kwargs))
        if args[:2] == ("python", "-c"):
            return f"{self.has_torch}\n"
        if args[:4] == ("python", "-m", "pip", "config"):
            return self.pip_config
        raise AssertionError(f"unexpected command {args}")

    def installs(self) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
        return [(args, kwargs) for kind, args, kwargs in self.calls if kind == "install"]

    def logs(self) -> list[str]:
        return [args[0] for kind, args, _ in self.calls if kind == "log"]


@pytest.fixture
def linux_without_gpu(noxfile: types.ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(noxfile, "on_linux", lambda: True)
    monkeypatch.setattr(noxfile, "NVIDIA_FILES", (tmp_path / "no-such-file",))
    monkeypatch.setattr(noxfile.shutil, "which", lambda name: None)


def test_first_install_says_what_and_why_then_shows_pips_progress(
    noxfile: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = FakeSession(tmp_path / "venv")  # not Linux (macOS, Windows): PyPI's torch as it is
    noxfile.install(session, "test")
    logs, installs = session.logs(), session.installs()
    assert len(logs) == 1 and "torch alone is hundreds of MB" in logs[0] and "venv" in logs[0]
    assert logs[0].startswith("installing torch, numpy, pytest, ")
    kinds = [kind for kind, _, _ in session.calls if kind != "run"]
    assert kinds == ["log", "install"], "the line comes before pip starts"
    ((args, kwargs),) = installs
    assert args[:2] == ("torch>=2.4", "numpy>=1.26") and kwargs == {"silent": False}
    assert not any("download.pytorch.org" in arg for arg in args)

    again = FakeSession(tmp_path / "venv")  # nothing changed: no pip at all, not a word
    noxfile.install(again, "test")
    assert again.calls == []


def test_cpu_only_linux_gets_the_cpu_build_and_a_notice(
    noxfile: types.ModuleType, tmp_path: Path, linux_without_gpu: None
) -> None:
    session = FakeSession(tmp_path / "venv")
    noxfile.install(session, "test")
    (torch_args, torch_kwargs), (rest, rest_kwargs) = session.installs()
    assert torch_args == ("--index-url", "https://download.pytorch.org/whl/cpu", "torch>=2.4")
    assert torch_kwargs == rest_kwargs == {"silent": False}
    assert "torch>=2.4" in rest and not any("download.pytorch.org" in arg for arg in rest)
    notices = [line for line in session.logs() if "NVIDIA" in line]
    assert len(notices) == 1 and "CPU build" in notices[0] and "KATAS_TORCH=cuda" in notices[0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PIP_CONSTRAINT", ".ci/cpu-constraints.txt"),  # CI: PyPI only, download.pytorch.org unreachable
        ("KATAS_TORCH", "pypi"),  # what .ci/run says outright
        ("KATAS_TORCH", "cuda"),
        ("PIP_INDEX_URL", "https://mirror.example/simple"),
    ],
)
def test_no_extra_index_where_pip_is_steered_or_katas_torch_says_so(
    noxfile: types.ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    linux_without_gpu: None,
    variable: str,
    value: str,
) -> None:
    monkeypatch.setenv(variable, value)
    session = FakeSession(tmp_path / "venv")
    noxfile.install(session, "test")
    ((args, _),) = session.installs()
    assert not any("download.pytorch.org" in arg or "index-url" in arg for arg in args)
    assert not [call for call in session.calls if call[1][:4] == ("python", "-m", "pip", "config")]


def test_a_pip_config_with_its_own_sources_keeps_torch_from_them(
    noxfile: types.ModuleType, tmp_path: Path, linux_without_gpu: None
) -> None:
    session = FakeSession(tmp_path / "venv")
    session.pip_config = "global.extra-index-url='file:///opt/pypi/simple'\n:env:.default-timeout='180'\n"
    noxfile.install(session, "test")
    ((args, _),) = session.installs()
    assert not any("download.pytorch.org" in arg for arg in args)
    assert any("global.extra-index-url" in line and "KATAS_TORCH=cpu" in line for line in session.logs())


def test_no_extra_index_where_torch_is_there_already(
    noxfile: types.ModuleType, tmp_path: Path, linux_without_gpu: None
) -> None:
    session = FakeSession(tmp_path / "venv", has_torch=True)  # the devcontainer's, through system packages
    noxfile.install(session, "test")
    ((args, _),) = session.installs()
    assert not any("download.pytorch.org" in arg for arg in args)
    assert "torch is there already" in session.logs()[0]


def test_an_nvidia_driver_keeps_pypis_torch(
    noxfile: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, linux_without_gpu: None
) -> None:
    driver = tmp_path / "version"
    driver.write_text("NVRM version: 580.65\n")
    monkeypatch.setattr(noxfile, "NVIDIA_FILES", (driver,))
    session = FakeSession(tmp_path / "venv")
    noxfile.install(session, "test")
    ((args, _),) = session.installs()
    assert not any("download.pytorch.org" in arg for arg in args)


def test_katas_torch_cpu_asks_for_the_cpu_index_anywhere(
    noxfile: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KATAS_TORCH", "cpu")
    session = FakeSession(tmp_path / "venv")
    noxfile.install(session, "test")
    assert session.installs()[0][0] == ("--index-url", "https://download.pytorch.org/whl/cpu", "torch>=2.4")


def test_a_misspelt_katas_torch_is_one_line(
    noxfile: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KATAS_TORCH", "gpu")
    with pytest.raises(Aborted, match=r"^KATAS_TORCH='gpu': choose one of auto, cpu, cuda, pypi$"):
        noxfile.install(FakeSession(tmp_path / "venv"), "test")


# --- rebuilding a venv that something else built --------------------------------------------------------


def built_venv(noxfile: types.ModuleType, location: Path, **identity: Any) -> FakeSession:
    """A venv that install() has filled, then given another identity, as another Python would have."""
    session = FakeSession(location)
    noxfile.install(session, "test")
    stamp = location / noxfile.VENV_STAMP
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), **identity}))
    (location / "marker").write_text("built before")
    return session


def rebuilt(noxfile: types.ModuleType, location: Path) -> tuple[FakeSession, bool]:
    session = FakeSession(location)
    noxfile.install(session, "test")
    return session, session.virtualenv.created == 1 and not (location / "marker").exists()


@pytest.mark.parametrize(
    "identity",
    [
        {"python": "CPython 3.9.0"},  # another Python version
        {"base": "/host/usr"},  # another Python install: the host's, seen from a container
        {"venv_params": ["--system-site-packages"]},
    ],
    ids=["version", "install", "venv-params"],
)
def test_a_venv_built_by_another_python_or_with_other_options_is_rebuilt(
    noxfile: types.ModuleType, tmp_path: Path, identity: dict[str, Any]
) -> None:
    location = tmp_path / "venv"
    built_venv(noxfile, location, **identity)
    session, was_rebuilt = rebuilt(noxfile, location)
    assert was_rebuilt
    assert session.logs()[0].startswith(f"rebuilding {location}: ")
    assert len(session.installs()) == 1  # and everything installed afresh
    assert json.loads((location / noxfile.VENV_STAMP).read_text()) == noxfile.venv_identity()
    assert rebuilt(noxfile, location)[1] is False  # once


def test_changing_katas_system_site_packages_rebuilds(
    noxfile: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = tmp_path / "venv"
    built_venv(noxfile, location)
    monkeypatch.setattr(noxfile, "VENV_PARAMS", ["--system-site-packages"])
    session, was_rebuilt = rebuilt(noxfile, location)
    assert was_rebuilt and "KATAS_SYSTEM_SITE_PACKAGES" in session.logs()[0]


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS has one torch build, with no +cpu tag")
@pytest.mark.parametrize(("choice", "torch", "rebuild"), [
    ("cpu", "2.9.1", True), ("cpu", "2.9.1+cpu", False), ("cuda", "2.9.1+cpu", True),
    ("cuda", "2.9.1", False), ("auto", "2.9.1", False), ("pypi", "2.9.1+cpu", False),
])  # fmt: skip
def test_an_explicit_katas_torch_rebuilds_a_venv_holding_the_other_build(
    noxfile: types.ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    choice: str,
    torch: str,
    rebuild: bool,
) -> None:
    location = tmp_path / "venv"
    built_venv(noxfile, location)
    (location / "lib" / "python3.12" / "site-packages" / f"torch-{torch}.dist-info").mkdir(parents=True)
    monkeypatch.setenv("KATAS_TORCH", choice)
    session, was_rebuilt = rebuilt(noxfile, location)
    assert was_rebuilt is rebuild
    if rebuild:
        assert f"torch {torch}" in session.logs()[0] and f"KATAS_TORCH={choice}" in session.logs()[0]


def pyvenv_cfg(version: str, system: bool, base: str) -> str:
    return (
        f"home = {base}/bin\nimplementation = {platform.python_implementation()}\n"
        f"version_info = {version}.final.0\ninclude-system-site-packages = {str(system).lower()}\n"
        f"base-prefix = {base}\n"
    )


@pytest.mark.parametrize(
    ("cfg", "rebuild"),
    [
        (pyvenv_cfg(platform.python_version(), False, sys.base_prefix), False),  # adopted as it is
        (pyvenv_cfg("3.9.0", False, sys.base_prefix), True),
        (pyvenv_cfg(platform.python_version(), True, sys.base_prefix), True),
        (pyvenv_cfg(platform.python_version(), False, "/host/usr"), True),
        (None, True),
    ],
    ids=["same", "version", "system-site-packages", "base", "no-pyvenv-cfg"],
)
def test_a_venv_from_before_the_stamp_is_judged_by_its_pyvenv_cfg(
    noxfile: types.ModuleType, tmp_path: Path, cfg: str | None, rebuild: bool
) -> None:
    location = tmp_path / "venv"
    built_venv(noxfile, location)
    (location / noxfile.VENV_STAMP).unlink()
    if cfg is not None:
        (location / "pyvenv.cfg").write_text(cfg)
    assert rebuilt(noxfile, location)[1] is rebuild
    assert (location / noxfile.VENV_STAMP).exists()


def test_a_venv_nox_has_just_built_is_not_rebuilt(noxfile: types.ModuleType, tmp_path: Path) -> None:
    session = FakeSession(tmp_path / "venv")
    noxfile.install(session, "test")
    assert session.virtualenv.created == 0


# --- .ci/run ------------------------------------------------------------------------------------------


def test_ci_pins_torch_and_asks_for_no_extra_index() -> None:
    text = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    exports = dict(re.findall(r"^export (\w+)=(.*)$", text, re.MULTILINE))
    assert exports["PIP_CONSTRAINT"] == '"$PWD/.ci/cpu-constraints.txt"'
    assert exports["KATAS_TORCH"] in ("pypi", "cuda")  # no download.pytorch.org: CI reaches PyPI only
    assert text.index("export KATAS_TORCH") < text.index("nox -s verify")
