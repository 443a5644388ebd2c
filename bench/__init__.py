"""Benchmarks: each prints tickrun beside a baseline measured in the same run."""
