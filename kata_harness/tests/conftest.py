"""The harness's own tests drive inner pytest runs with pytester."""

# Imported here, before any inner run: pytester's in-process runs drop modules first imported inside them,
# and numpy cannot be imported twice in one process.
import kata_harness.grading
import kata_harness.scoreboard  # noqa: F401

pytest_plugins = ["pytester"]
