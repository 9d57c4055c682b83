"""Benchmark scripts (not tests): run them as ``python -m benchmarks.NAME``; see benchmarks/README.md."""
