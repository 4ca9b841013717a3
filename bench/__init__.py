"""Benchmarks P1-P4 (docs/performance.md). Not part of the test suite."""
