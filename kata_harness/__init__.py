"""The harness behind pytorch-katas: loading, grading, the scoreboard, the CUDA marker and stub generation."""

from kata_harness.source import load_kata

__all__ = ["load_kata"]
