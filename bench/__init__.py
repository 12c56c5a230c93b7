"""Benchmarks: each ``bench_*.py`` module measures a figure against a baseline in the same run."""
