"""Benchmarks: scripts that print figures (never timed assertions). Run `python -m benchmarks.run_all`."""
