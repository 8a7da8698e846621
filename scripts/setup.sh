#!/usr/bin/env bash
# Set up pytorch-katas: install nox if it is missing, then pre-build the environment `nox -s check` grades
# in (.nox/check) without running a test, so the first grading run is fast. Safe to run again.
# Both devcontainers run it after creating the container; without a container, run it yourself (README).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nox >/dev/null 2>&1; then
    # Into the active virtualenv when there is one; else into .venv here (git-ignored), never system-wide
    # nor with `pip install --user`, which an "externally managed" Python (PEP 668: Debian, Ubuntu,
    # Homebrew) refuses.
    if python3 -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
        python3 -m pip install "nox>=2025.2.9"
    else
        if [ ! -x .venv/bin/nox ]; then
            echo "No virtual environment is active: installing nox into .venv (or use pipx: pipx install nox)."
            python3 -m venv .venv || {
                echo "python3 -m venv failed: install your system's venv package (e.g. python3-venv)," \
                    "or install nox yourself with pipx, then run this again." >&2
                exit 1
            }
            .venv/bin/python -m pip install "nox>=2025.2.9"
        fi
        PATH="$PWD/.venv/bin:$PATH"
        echo "nox is in .venv: run 'source .venv/bin/activate' to use nox yourself."
    fi
fi

# nox installs what pyproject.toml declares (runtime dependencies and the test group).
nox -s check --install-only
echo "Ready: grade your katas with 'nox -s check' (or the 'Grade all katas' task in VS Code)."
