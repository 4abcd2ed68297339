"""The short chaos soak (30 s) as a test: real workers, beat, simulator; zero violations."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.settings import ROOT

pytestmark = pytest.mark.faults


def test_a_short_chaos_soak_ends_with_zero_violations(database_url: str, redis_url: str) -> None:
    # Given the servers the test run uses (the soak makes its own scratch database and Redis DB)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url)
    # When the short variant runs: 30 s of bans, trust drops, outages and killed workers
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--minutes", "0.5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    # Then it reports zero violations, and the chaos did happen
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "violations: 0 " in run.stdout
    assert "operations: auto_replace" in run.stdout
    assert "worker processes killed" in run.stdout
