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
# ... and those the devcontainer spec adds for devcontainer.json.
DEVCONTAINER_VARIABLES = {"containerWorkspaceFolder", "devcontainerId"}
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


def variables(paths: list[Path]) -> set[str]:
    return {name for path in paths for name in re.findall(r"\$\{([^}]*)\}", path.read_text(encoding="utf-8"))}


def test_vscode_files_use_only_known_variables() -> None:
    used = variables(list(VSCODE.glob("*.json")))
    assert used <= KNOWN_VARIABLES, f"unknown VS Code variables: {used - KNOWN_VARIABLES}"
    used = variables(list(DEVCONTAINERS.values()))
    known = KNOWN_VARIABLES | DEVCONTAINER_VARIABLES
    assert used <= known, f"unknown devcontainer variables: {used - known}"


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
    assert shlex.split(config["onCreateCommand"])[-3:] == ["&&", "bash", "scripts/setup.sh"]
    assert SETUP.is_file()
    assert config["remoteUser"] not in ("", "root")
    assert set(config["customizations"]["vscode"]["extensions"]) >= EXTENSIONS
    # The nox venvs then see the image's torch (noxfile.py honours the variable).
    assert config["containerEnv"]["KATAS_SYSTEM_SITE_PACKAGES"] == "1"
    assert "KATAS_SYSTEM_SITE_PACKAGES" in NOXFILE.read_text(encoding="utf-8")
    # One docker argument per string ("--shm-size 2g" as one string would reach docker as one word).
    assert all(isinstance(arg, str) and not re.search(r"\s", arg) for arg in config.get("runArgs", []))


LIFECYCLE = ["initializeCommand", "onCreateCommand", "updateContentCommand", "postCreateCommand"]


@pytest.mark.parametrize("flavour", DEVCONTAINERS)
def test_devcontainer_builds_the_grading_interpreter_before_the_editor_looks_for_it(flavour: str) -> None:
    """The Python extension resolves .nox/check once VS Code stops waiting: setup.sh must be done by then."""
    config = load(DEVCONTAINERS[flavour])
    waits_for = config.get("waitFor", "updateContentCommand")  # the spec's default
    builds = [key for key in LIFECYCLE if "scripts/setup.sh" in str(config.get(key, ""))]
    assert builds == ["onCreateCommand"]
    assert LIFECYCLE.index(builds[0]) <= LIFECYCLE.index(waits_for)
    interpreter = SETTINGS["python.defaultInterpreterPath"]
    assert interpreter.replace("${workspaceFolder}", "") == "/.nox/check"


@pytest.mark.parametrize("flavour", DEVCONTAINERS)
def test_devcontainer_keeps_its_nox_environments_apart_from_the_hosts(flavour: str) -> None:
    """A .nox/check built on the host must not grade in the container: .nox there is a volume of its own."""
    config = load(DEVCONTAINERS[flavour])
    mounts = [m for m in config.get("mounts", []) if isinstance(m, dict)]
    (mount,) = [m for m in mounts if m["target"] == "${containerWorkspaceFolder}/.nox"]
    assert mount["type"] == "volume"
    # Named (it outlives a rebuild, so the venv is not rebuilt every time) and one per container: the CPU
    # and CUDA containers of one clone must not share it.
    assert "${devcontainerId}" in mount.get("source", "")
    # Docker creates it owned by root: the remote user must own it before setup.sh writes .nox/check.
    words = shlex.split(config["onCreateCommand"])
    assert words[:2] == ["sudo", "chown"] and words[3] == ".nox" and words.index("bash") > 3
    assert words[2] == "$(id -u):$(id -g)"  # the user's ids, as VS Code may remap them to the host's


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


def run_setup(tmp_path: Path, *, nox_installed: bool, in_venv: bool = False) -> tuple[list[str], str, Path]:
    """Run a copy of setup.sh from another folder with stand-ins for python3 and nox, twice.

    Returns what the stand-ins were asked, the script's output and the copy's repository root. The python3
    stand-in is an "externally managed" one (PEP 668): `pip install --user` fails there as it does on
    Debian, Ubuntu or Homebrew, unless a virtual environment is active.
    """
    tools = [shutil.which(name) for name in ("bash", "dirname")]
    if not all(tools):
        pytest.skip("needs bash")
    system_path = os.pathsep.join(sorted({str(Path(tool).parent) for tool in tools}))
    if shutil.which("nox", path=system_path):
        pytest.skip("a real nox is on the system PATH")
    clone, bin_dir, log = tmp_path / "clone", tmp_path / "bin", tmp_path / "log"
    (clone / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, clone / "scripts" / "setup.sh")
    bin_dir.mkdir()
    fake_nox = '#!/bin/sh\necho "nox $* (in $PWD)" >> "$LOG"\n'
    if nox_installed:
        (bin_dir / "nox").write_text(fake_nox, encoding="utf-8")
    # A venv's python stand-in: "installs" nox beside itself.
    venv_python = textwrap.dedent(
        """\
        #!/usr/bin/env bash
        echo "venv-python $*" >> "$LOG"
        [ "$1 $2 $3" = "-m pip install" ] && printf '%s' "$FAKE_NOX" > "$(dirname "$0")/nox" \\
            && chmod +x "$(dirname "$0")/nox"
        exit 0
        """
    )
    # python3 stand-in: reports a venv or not, makes venvs, refuses --user, "installs" nox where pip would.
    (bin_dir / "python3").write_text(
        textwrap.dedent(
            """\
            #!/usr/bin/env bash
            echo "python3 $*" >> "$LOG"
            case "$1 $2" in
                "-c "*) exit "$IN_VENV_EXIT" ;;
                "-m venv")
                    mkdir -p "$3/bin" && printf '%s' "$VENV_PYTHON" > "$3/bin/python"
                    chmod +x "$3/bin/python" ;;
                "-m pip")
                    if [ "$IN_VENV_EXIT" != 0 ]; then
                        echo "error: externally-managed-environment" >&2; exit 1
                    fi
                    printf '%s' "$FAKE_NOX" > "$BIN_DIR/nox" && chmod +x "$BIN_DIR/nox" ;;
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
        "FAKE_NOX": fake_nox,
        "VENV_PYTHON": venv_python,
        "IN_VENV_EXIT": "0" if in_venv else "1",
    }
    output = ""
    for _ in range(2):  # a second run must work just as well
        run = subprocess.run(
            ["bash", str(clone / "scripts" / "setup.sh")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        output += run.stdout
    return log.read_text(encoding="utf-8").splitlines(), output, clone


def test_setup_script_prebuilds_with_an_installed_nox_and_can_run_again(tmp_path: Path) -> None:
    calls, _, clone = run_setup(tmp_path, nox_installed=True)
    expected = f"nox -s check --install-only (in {clone})"
    assert calls == [expected, expected]


def test_setup_script_installs_nox_into_the_active_venv(tmp_path: Path) -> None:
    calls, _, clone = run_setup(tmp_path, nox_installed=False, in_venv=True)
    pip = [call for call in calls if " -m pip " in call]
    assert pip == [f"python3 -m pip install {nox_requirement()}"]  # once only
    assert calls.count(f"nox -s check --install-only (in {clone})") == 2


def test_setup_script_without_a_venv_makes_dot_venv_not_a_user_install(tmp_path: Path) -> None:
    """pip's --user fails on an externally managed Python (PEP 668): the script uses .venv and says so."""
    calls, output, clone = run_setup(tmp_path, nox_installed=False, in_venv=False)
    assert not [call for call in calls if "--user" in call]
    assert [call for call in calls if " -m venv" in call] == ["python3 -m venv .venv"]  # once only
    assert [call for call in calls if " -m pip " in call] == [
        f"venv-python -m pip install {nox_requirement()}"
    ]
    assert (clone / ".venv" / "bin" / "nox").is_file()
    assert calls.count(f"nox -s check --install-only (in {clone})") == 2
    assert "source .venv/bin/activate" in output and "pipx" in output
    assert ".venv/" in (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()


# --- Tasks --------------------------------------------------------------------------------------------


def test_tasks_have_unique_labels_and_run_real_nox_sessions() -> None:
    sessions = nox_sessions(NOXFILE)
    assert len({task["label"] for task in TASKS}) == len(TASKS)
    for task_ in TASKS:
        words = command_words(task_)
        assert nox_session(words) in sessions, f"{task_['label']!r} runs a session noxfile.py lacks"


def test_default_test_task_grades_every_kata() -> None:
    defaults = [t for t in TASKS if t.get("group") == {"kind": "test", "isDefault": True}]
    assert [t["label"] for t in defaults] == ["Grade all katas"]
    words = command_words(defaults[0])
    assert nox_session(words) == "check"
    assert posargs(words) == ["--problem-lines"]  # no kata selector: all of them


@pytest.mark.parametrize("session", ["check", "hint", "compare", "reset", "watch"])
def test_a_task_runs_the_session_on_the_open_kata(session: str) -> None:
    words = [command_words(t) for t in TASKS]
    assert any(nox_session(w) == session and OPEN_KATA in posargs(w) for w in words)


@pytest.mark.parametrize("kata", [kata.name for kata in all_katas()])
def test_the_open_file_names_its_kata(kata: str) -> None:
    """The open kata file's, its solution's or its test file's basename is a selector nox accepts."""
    for basename in (kata, f"test_{kata}"):
        assert is_kata_selector(basename)
        assert find_kata(basename).name == kata


def test_compare_task_goes_through_the_spoiler_guard() -> None:
    """`nox -s compare` asks before it shows the reference of a kata that does not pass; `code --diff`
    would not. The question is asked in the task's terminal, which therefore takes the keyboard."""
    compare_task = task("Compare the open kata with its solution")
    words = command_words(compare_task)
    assert nox_session(words) == "compare"
    assert posargs(words) == [OPEN_KATA]  # no --peek
    assert compare_task["presentation"].get("focus") is True
    assert compare_task["presentation"].get("reveal", "always") == "always"


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
