"""Reproducible benchmarks: `python -m benchmarks <suite> [--quick]` (see benchmarks/README.md)."""
