"""Benchmarks: commands that print figures, each against a baseline measured in the same run."""
