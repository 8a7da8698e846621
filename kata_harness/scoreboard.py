"""pytest plugin that ends a run with the learner's scoreboard (placeholder while the harness is built)."""
