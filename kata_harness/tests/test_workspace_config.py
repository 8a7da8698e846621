"""Static checks of the VS Code set-up: both devcontainers, scripts/setup.sh and the .vscode/ files.

No Docker engine or VS Code runs here, so these check what can be checked without one: every JSON-with-
comments file parses; both devcontainer.json files validate against the spec's schema (a copy in data/, see
data/README.md) and the CPU one carries no GPU settings; the files they name exist; every task runs a nox
session that noxfile.py defines (read with `ast`, never imported); the image and the set-up script install
what pyproject.toml declares; the problem matcher and the debug configuration work on real output.
"""

from __future__ import annotations

import ast
import copy
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import json5
import jsonschema
import pytest

from kata_harness.catalog import all_katas, find_kata, is_kata_selector

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).with_name("data") / "devContainer.base.schema.json"
DEVCONTAINERS = {
    "cpu": REPO / ".devcontainer" / "cpu" / "devcontainer.json",
    "cuda": REPO / ".devcontainer" / "cuda" / "devcontainer.json",
}
DOCKERFILE = REPO / ".devcontainer" / "Dockerfile"
SETUP = REPO / "scripts" / "setup.sh"
VSCODE = REPO / ".vscode"
NOXFILE = REPO / "noxfile.py"
EXTENSIONS = {"ms-python.python", "ms-python.vscode-pylance", "ms-python.debugpy", "charliermarsh.ruff"}
OPEN_KATA = "${fileBasenameNoExtension}"  # the kata in the active editor
# The VS Code variables these files may use: a misspelt one reaches the command unexpanded.
KNOWN_VARIABLES = {"workspaceFolder", "fileBasenameNoExtension"}
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def load(path: Path) -> Any:
    """A JSON-with-comments file, as VS Code and the devcontainer tools read it."""
    return json5.loads(path.read_text(encoding="utf-8"))


def nox_sessions(noxfile: Path) -> set[str]:
    """The session names a noxfile defines, read with `ast` so that none of its code runs."""
    sessions = set()
    for node in ast.walk(ast.parse(noxfile.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            if ast.unparse(call.func if call else decorator) not in ("nox.session", "session"):
                continue
            names = [
                keyword.value.value
                for keyword in (call.keywords if call else [])
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant)
            ]
            sessions.add(names[0] if names else node.name)
    return sessions


def command_words(task: dict[str, Any]) -> list[str]:
    """A task's command line as words (VS Code's {"value": ..., "quoting": ...} args reduced to the value)."""
    args = [arg["value"] if isinstance(arg, dict) else arg for arg in task.get("args", [])]
    return [*shlex.split(task["command"]), *args]


def nox_session(words: list[str]) -> str | None:
    """The session a nox command line runs; None for a command that is not nox."""
    if Path(words[0]).name != "nox":
        return None
    for flag, value in itertools.pairwise(words):
        if flag in ("-s", "--session", "--sessions", "-e"):
            return value
    raise AssertionError(f"{shlex.join(words)} runs nox's default sessions: name the session with -s")


def posargs(words: list[str]) -> list[str]:
    """What a nox command line passes to its session (the words after `--`)."""
    return words[words.index("--") + 1 :] if "--" in words else []


TASKS = load(VSCODE / "tasks.json")["tasks"]
LAUNCH = load(VSCODE / "launch.json")["configurations"]
SETTINGS = load(VSCODE / "settings.json")


def task(label: str) -> dict[str, Any]:
    return next(task for task in TASKS if task["label"] == label)


# --- Every file ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    sorted([*(REPO / ".devcontainer").rglob("*.json"), *VSCODE.glob("*.json")]),
    ids=lambda path: str(path.relative_to(REPO)),
)
def test_config_file_parses_as_json_with_comments(path: Path) -> None:
    assert isinstance(load(path), dict)


def test_vscode_files_use_only_known_variables() -> None:
    paths = [*DEVCONTAINERS.values(), *VSCODE.glob("*.json")]
    used = {name for path in paths for name in re.findall(r"\$\{([^}]*)\}", path.read_text(encoding="utf-8"))}
    assert used <= KNOWN_VARIABLES, f"unknown VS Code variables: {used - KNOWN_VARIABLES}"


def test_nox_sessions_are_read_without_running_the_noxfile(tmp_path: Path) -> None:
    noxfile = tmp_path / "noxfile.py"
    noxfile.write_text(
        textwrap.dedent(
            """
            import nox
            from nox import session
            raise SystemExit("importing the noxfile is a bug")

            @nox.session(venv_params=[])
            def check(session): ...

            @nox.session(python=False, name="watch")
            def watch_katas(session): ...

            @session
            def hint(session): ...

            def helper(session): ...
            """
        ),
        encoding="utf-8",
    )
    assert nox_sessions(noxfile) == {"check", "watch", "hint"}


# --- Devcontainers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = load(SCHEMA)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize("flavour", DEVCONTAINERS)
def test_devcontainer_validates_against_the_spec_schema(flavour: str, validator) -> None:
    config = load(DEVCONTAINERS[flavour])
    assert [f"{error.json_path}: {error.message}" for error in validator.iter_errors(config)] == []


@pytest.mark.parametrize(
    ("key", "value"),
    [("runArg", ["--gpus=all"]), ("runArgs", "--gpus=all"), ("containerEnv", {"PYTEST_CUDA": 1})],
)
def test_the_schema_catches_misspelt_and_mistyped_keys(key: str, value: Any, validator) -> None:
    config = copy.deepcopy(load(DEVCONTAINERS["cuda"]))
    config[key] = value
    assert list(validator.iter_errors(config))


def dockerfile_args() -> set[str]:
    return set(re.findall(r"^ARG\s+(\w+)", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE))


@pytest.mark.parametrize("flavour", DEVCONTAINERS)
def test_devcontainer_builds_the_shared_dockerfile(flavour: str) -> None:
    path = DEVCONTAINERS[flavour]
    build = load(path)["build"]
    assert (path.parent / build["dockerfile"]).resolve() == DOCKERFILE
    assert (path.parent / build["context"]).is_dir()
    assert set(build["args"]) <= dockerfile_args()
    torch_flavour = build["args"]["TORCH_FLAVOUR"]
    if flavour == "cpu":
        assert torch_flavour == "cpu"
    else:
        assert re.fullmatch(r"cu\d{3}", torch_flavour), "a CUDA wheel index such as cu130"


@pytest.mark.parametrize("flavour", DEVCONTAINERS)
def test_devcontainer_shares_set_up_user_and_extensions(flavour: str) -> None:
    config = load(DEVCONTAINERS[flavour])
    # The README's set-up, one script for both; lifecycle commands run in the workspace folder.
    assert config["postCreateCommand"] == "bash scripts/setup.sh"
    assert SETUP.is_file()
    assert config["remoteUser"] not in ("", "root")
    assert set(config["customizations"]["vscode"]["extensions"]) >= EXTENSIONS
    # The nox venvs then see the image's torch (noxfile.py honours the variable).
    assert config["containerEnv"]["KATAS_SYSTEM_SITE_PACKAGES"] == "1"
    assert "KATAS_SYSTEM_SITE_PACKAGES" in NOXFILE.read_text(encoding="utf-8")
    # One docker argument per string ("--shm-size 2g" as one string would reach docker as one word).
    assert all(isinstance(arg, str) and not re.search(r"\s", arg) for arg in config.get("runArgs", []))


def shm_bytes(run_args: list[str]) -> float:
    units = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
    if "--ipc=host" in run_args:
        return float("inf")
    for arg in run_args:
        if match := re.fullmatch(r"--shm-size=(\d+)([bkmg]?)", arg.lower()):
            return int(match[1]) * units[match[2]]
    return 64 * 2**20  # Docker's default


def test_cuda_devcontainer_passes_the_gpu_through_and_requires_it() -> None:
    config = load(DEVCONTAINERS["cuda"])
    assert "--gpus=all" in config["runArgs"]
    assert shm_bytes(config["runArgs"]) >= 2**30, "DataLoader workers need more than 64 MB of /dev/shm"
    assert config["containerEnv"]["PYTEST_CUDA"] == "require"  # a broken pass-through fails, not skips


def test_cpu_devcontainer_has_no_gpu_settings() -> None:
    config = load(DEVCONTAINERS["cpu"])
    gpu_args = [arg for arg in config.get("runArgs", []) if re.match(r"--(gpus|runtime)\b|.*nvidia", arg)]
    assert not gpu_args
    assert not [name for name in config.get("containerEnv", {}) if name.startswith(("NVIDIA_", "CUDA_"))]
    assert not config.get("hostRequirements", {}).get("gpu")
    assert config["containerEnv"].get("PYTEST_CUDA", "auto") != "require"
    assert shm_bytes(config.get("runArgs", [])) >= 2**30


# --- What gets installed ------------------------------------------------------------------------------


def test_dockerfile_base_image_is_pinned_by_tag() -> None:
    images = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert len(images) == 1
    name, _, tag = images[0].partition("@")[0].rpartition(":")
    assert name and tag and tag != "latest" and "/" not in tag, f"pin the base image: {images[0]}"


def test_dockerfile_installs_the_torch_flavour_and_the_runtime_dependencies() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "TORCH_FLAVOUR" in dockerfile_args()
    assert '--index-url "https://download.pytorch.org/whl/${TORCH_FLAVOUR}"' in text
    for requirement in PYPROJECT["project"]["dependencies"]:
        assert f'"{requirement}"' in text, f"the image must install {requirement} (pyproject.toml)"


def nox_requirement() -> str:
    return next(req for req in PYPROJECT["dependency-groups"]["dev"] if isinstance(req, str) and "nox" in req)


@pytest.mark.parametrize("path", [DOCKERFILE, SETUP], ids=lambda path: path.name)
def test_nox_is_installed_as_the_dev_group_pins_it(path: Path) -> None:
    assert f'"{nox_requirement()}"' in path.read_text(encoding="utf-8")


def test_setup_script_is_strict_bash_that_prebuilds_the_check_environment() -> None:
    text = SETUP.read_text(encoding="utf-8")
    assert "set -euo pipefail" in text
    # nox installs the project's declared dependencies (pyproject.toml) into .nox/check.
    assert "nox -s check --install-only" in text
    if shutil.which("bash"):
        subprocess.run(["bash", "-n", str(SETUP)], check=True)


def run_setup(tmp_path: Path, *, nox_installed: bool, in_venv: bool = False) -> list[str]:
    """Run setup.sh from another folder with stand-ins for python3 and nox; return what they were asked."""
    tools = [shutil.which(name) for name in ("bash", "dirname")]
    if not all(tools):
        pytest.skip("needs bash")
    system_path = os.pathsep.join(sorted({str(Path(tool).parent) for tool in tools}))
    if shutil.which("nox", path=system_path):
        pytest.skip("a real nox is on the system PATH")
    bin_dir, user_base, log = tmp_path / "bin", tmp_path / "user-base", tmp_path / "log"
    bin_dir.mkdir()
    fake_nox = '#!/bin/sh\necho "nox $* (in $PWD)" >> "$LOG"\n'
    if nox_installed:
        (bin_dir / "nox").write_text(fake_nox, encoding="utf-8")
    # python3 stand-in: reports a venv or not, and "installs" nox where pip would put it.
    (bin_dir / "python3").write_text(
        textwrap.dedent(
            """\
            #!/usr/bin/env bash
            echo "python3 $*" >> "$LOG"
            case "$1 $2" in
                "-c "*) exit "$IN_VENV_EXIT" ;;
                "-m site") echo "$USER_BASE" ;;
                "-m pip")
                    if [[ " $* " == *" --user "* ]]; then dir="$USER_BASE/bin"; else dir="$BIN_DIR"; fi
                    mkdir -p "$dir" && printf '%s' "$FAKE_NOX" > "$dir/nox" && chmod +x "$dir/nox" ;;
            esac
            """
        ),
        encoding="utf-8",
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{system_path}",
        "HOME": str(tmp_path),
        "LOG": str(log),
        "BIN_DIR": str(bin_dir),
        "USER_BASE": str(user_base),
        "FAKE_NOX": fake_nox,
        "IN_VENV_EXIT": "0" if in_venv else "1",
    }
    for _ in range(2):  # a second run must work just as well
        subprocess.run(["bash", str(SETUP)], cwd=tmp_path, env=env, check=True, capture_output=True)
    return log.read_text(encoding="utf-8").splitlines()


def test_setup_script_prebuilds_with_an_installed_nox_and_can_run_again(tmp_path: Path) -> None:
    expected = f"nox -s check --install-only (in {REPO})"
    assert run_setup(tmp_path, nox_installed=True) == [expected, expected]


@pytest.mark.parametrize("in_venv", [True, False], ids=["in-a-venv", "user-install"])
def test_setup_script_installs_nox_when_missing(tmp_path: Path, in_venv: bool) -> None:
    calls = run_setup(tmp_path, nox_installed=False, in_venv=in_venv)
    pip = [call for call in calls if call.startswith("python3 -m pip install")]
    user = [] if in_venv else ["--user"]
    assert pip == [" ".join(["python3", "-m", "pip", "install", *user, nox_requirement()])]  # once only
    assert calls.count(f"nox -s check --install-only (in {REPO})") == 2


# --- Tasks --------------------------------------------------------------------------------------------


def test_tasks_have_unique_labels_and_run_real_nox_sessions() -> None:
    sessions = nox_sessions(NOXFILE)
    assert len({task["label"] for task in TASKS}) == len(TASKS)
    for task_ in TASKS:
        words = command_words(task_)
        if words[0] == "code":  # the one task that is not nox: VS Code's own diff of kata and solution
            assert words[1] == "--diff", task_["label"]
            continue
        assert nox_session(words) in sessions, f"{task_['label']!r} runs a session noxfile.py lacks"


def test_default_test_task_grades_every_kata() -> None:
    defaults = [t for t in TASKS if t.get("group") == {"kind": "test", "isDefault": True}]
    assert [t["label"] for t in defaults] == ["Grade all katas"]
    words = command_words(defaults[0])
    assert nox_session(words) == "check"
    assert posargs(words) == ["--problem-lines"]  # no kata selector: all of them


@pytest.mark.parametrize("session", ["check", "hint", "reset", "watch"])
def test_a_task_runs_the_session_on_the_open_kata(session: str) -> None:
    words = [command_words(t) for t in TASKS]
    assert any(nox_session(w) == session and OPEN_KATA in posargs(w) for w in words)


@pytest.mark.parametrize("kata", [kata.name for kata in all_katas()])
def test_the_open_file_names_its_kata(kata: str) -> None:
    """The open kata file's, its solution's or its test file's basename is a selector nox accepts."""
    for basename in (kata, f"test_{kata}"):
        assert is_kata_selector(basename)
        assert find_kata(basename).name == kata


@pytest.mark.parametrize("kata", [kata.name for kata in all_katas()])
def test_compare_task_shows_the_learners_file_beside_its_solution(kata: str) -> None:
    words = command_words(task("Compare the open kata with its solution"))
    if nox_session(words) == "compare":  # the harness's own diff
        assert posargs(words)[:1] == [OPEN_KATA]
        return
    assert words[:2] == ["code", "--diff"]  # VS Code's diff editor
    files = [REPO / word.replace(OPEN_KATA, kata) for word in words[2:]]
    assert files == [REPO / "katas" / f"{kata}.py", REPO / "solutions" / f"{kata}.py"]
    assert files[0].parent.is_dir() and files[1].is_file()  # the stub itself: `nox -s verify` checks stubs


GRADING_TASKS = [t["label"] for t in TASKS if nox_session(command_words(t)) == "check"]


@pytest.mark.parametrize("label", GRADING_TASKS)
def test_grading_tasks_put_failures_in_the_problems_panel(label: str) -> None:
    grading = task(label)
    assert "--problem-lines" in posargs(command_words(grading))
    matcher = grading["problemMatcher"]
    assert matcher["fileLocation"][0] in ("autoDetect", "relative")
    assert matcher["fileLocation"][1] == "${workspaceFolder}"
    pattern = matcher["pattern"]
    line = "katas/k04_autograd.py:42: error: test_backward: grad is None - did you call .backward()?"
    match = re.match(pattern["regexp"], line)
    assert match
    found = {key: match[pattern[key]] for key in ("file", "line", "severity", "message")}
    assert found == {
        "file": "katas/k04_autograd.py",
        "line": "42",
        "severity": "error",
        "message": "test_backward: grad is None - did you call .backward()?",
    }
    for noise in (
        "katas/k04_autograd.py:42: in backward",
        "E       AssertionError: grad is None",
        "FAILED tests/test_k04_autograd.py::test_backward - AssertionError: grad is None",
    ):
        assert not re.match(pattern["regexp"], noise), noise


@pytest.mark.timeout(300)  # a real grading run, torch import included
def test_problem_matcher_reads_the_harness_output(tmp_path: Path) -> None:
    """Grade a pristine stub for real: each --problem-lines line matches and names a real file and line."""
    pytest.importorskip("torch")
    kata = all_katas()[0]
    stubs = tmp_path / "stubs"
    python = [sys.executable, "-m"]
    subprocess.run([*python, "kata_harness.stubgen", "--out", str(stubs), kata.name], cwd=REPO, check=True)
    grade = ["pytest", "-q", "-p", "no:cacheprovider", "--no-progress", "--problem-lines", kata.test_file]
    result = subprocess.run(
        [*python, *map(str, grade)],
        cwd=REPO,
        env={**os.environ, "KATA_SOURCE": str(stubs)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    pattern = task("Grade all katas")["problemMatcher"]["pattern"]
    problems = [m for line in result.stdout.splitlines() if (m := re.match(pattern["regexp"], line))]
    assert problems, result.stdout[-2000:]
    for match in problems:
        file = Path(match[pattern["file"]])
        file = file if file.is_absolute() else REPO / file  # autoDetect: absolute or workspace-relative
        assert file.is_file(), match[0]
        assert 1 <= int(match[pattern["line"]]) <= len(file.read_text(encoding="utf-8").splitlines())


# --- Debugging ----------------------------------------------------------------------------------------


def test_testing_view_debugs_with_breakpoints_in_the_learners_code() -> None:
    configs = [config for config in LAUNCH if "debug-test" in config.get("purpose", [])]
    assert len(configs) == 1, "the Testing view uses the configuration whose purpose is debug-test"
    config = configs[0]
    assert (config["type"], config["request"], config["justMyCode"]) == ("debugpy", "launch", False)
    assert config["env"]["PYTEST_TIMEOUT"] == "0"  # no 10 s timeout while paused on a breakpoint


@pytest.mark.timeout(120)  # two pytest runs
def test_open_kata_debug_config_runs_that_katas_tests(tmp_path: Path) -> None:
    config = next(config for config in LAUNCH if config.get("module") == "pytest")
    assert (config["type"], config["request"], config["justMyCode"]) == ("debugpy", "launch", False)
    assert config["cwd"] == "${workspaceFolder}"
    assert config["env"]["PYTEST_TIMEOUT"] == "0"
    # Its arguments, on a throwaway test tree: the kata file and its test file select the same tests.
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_k01_alpha.py").write_text("def test_one(): pass\ndef test_two(): pass\n", encoding="utf-8")
    (tests / "test_k02_beta.py").write_text("def test_one(): pass\n", encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    for opened in ("k01_alpha", "test_k01_alpha"):
        args = [arg.replace(OPEN_KATA, opened) for arg in config["args"]]
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
            cwd=tmp_path,
            env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},  # plain pytest: fast and isolated
            capture_output=True,
            text=True,
        )
        collected = sorted(line for line in result.stdout.splitlines() if "::" in line)
        assert collected == ["tests/test_k01_alpha.py::test_one", "tests/test_k01_alpha.py::test_two"]


# --- Settings and extensions --------------------------------------------------------------------------


def test_interpreter_is_the_check_sessions_environment() -> None:
    assert SETTINGS["python.defaultInterpreterPath"] == "${workspaceFolder}/.nox/check"
    assert "check" in nox_sessions(NOXFILE)  # nox builds session `check` in .nox/check


def test_testing_view_runs_pytest_on_the_graders() -> None:
    assert SETTINGS["python.testing.pytestEnabled"] is True
    assert SETTINGS["python.testing.unittestEnabled"] is False
    assert SETTINGS["python.testing.pytestArgs"] == PYPROJECT["tool"]["pytest"]["ini_options"]["testpaths"]
    assert all((REPO / path).is_dir() for path in SETTINGS["python.testing.pytestArgs"])


def test_ruff_formats_python_on_save() -> None:
    python = SETTINGS["[python]"]
    assert python["editor.defaultFormatter"] == "charliermarsh.ruff"
    assert python["editor.formatOnSave"] is True


def test_solutions_are_kept_out_of_search_and_quick_open() -> None:
    assert (REPO / "solutions").is_dir()
    assert SETTINGS["search.exclude"]["solutions/**"] is True  # Search and Quick Open both honour it
    assert not any("solutions" in glob for glob in SETTINGS.get("files.exclude", {}))  # still in the Explorer


def test_recommended_extensions_match_the_devcontainers() -> None:
    assert set(load(VSCODE / "extensions.json")["recommendations"]) >= EXTENSIONS
