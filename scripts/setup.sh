#!/usr/bin/env bash
# Set up pytorch-katas: install nox if it is missing, then pre-build the environment `nox -s check` grades
# in (.nox/check) without running a test, so the first grading run is fast. Safe to run again.
# Both devcontainers run it after creating the container; without a container, run it yourself (README).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nox >/dev/null 2>&1; then
    # Into the active virtualenv when there is one, else for this user only (never system-wide).
    if python3 -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
        python3 -m pip install "nox>=2025.2.9"
    else
        user_bin="$(python3 -m site --user-base)/bin"
        PATH="$user_bin:$PATH"
        command -v nox >/dev/null 2>&1 || python3 -m pip install --user "nox>=2025.2.9"
        echo "nox is in $user_bin: add that folder to your PATH to run nox yourself."
    fi
fi

# nox installs what pyproject.toml declares (runtime dependencies and the test group).
nox -s check --install-only
echo "Ready: grade your katas with 'nox -s check' (or the 'Grade all katas' task in VS Code)."
