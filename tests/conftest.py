"""The graders' pytest set-up: every plugin the harness brings, for `nox -s check` and a bare `pytest` alike."""

pytest_plugins = [
    "kata_harness.cuda_marker",
    "kata_harness.grading",
    "kata_harness.scoreboard",
]
