"""The harness's own tests drive inner pytest runs with pytester."""

import pytest

# Imported here, before any inner run: pytester's in-process runs drop modules first imported inside them,
# and numpy cannot be imported twice in one process.
import kata_harness.cuda_marker
import kata_harness.grading
import kata_harness.scoreboard  # noqa: F401

pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    # Inner runs import the CUDA plugin, whose fixture names the marker at import time.
    config.addinivalue_line("markers", "cuda: the test needs a CUDA GPU")
