"""The graders' pytest set-up: the harness's plugins, for `nox -s check` and a bare `pytest` alike."""

pytest_plugins = [
    "pytest_cuda_marker",
    "kata_harness.grading",
    "kata_harness.scoreboard",
    "kata_harness.isolation",
]
