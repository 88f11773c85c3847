"""Benchmark harness (run by hand: make bench)."""
