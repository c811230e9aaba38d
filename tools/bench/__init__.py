"""Benchmarks against the real local stack."""
