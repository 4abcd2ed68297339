"""The short chaos soak (30 s) as a test: real workers, beat, simulator; zero violations."""

from __future__ import annotations

import itertools
import os
import random
import re
import subprocess
import sys

import pytest

from benchmarks.soak import KILL_EVERY_STEPS, KillSchedule
from orchestrator.app.settings import ROOT

pytestmark = pytest.mark.faults


def test_a_short_chaos_soak_ends_with_zero_violations(database_url: str, redis_url: str) -> None:
    # Given the servers the test run uses (the soak makes its own scratch database and Redis DB)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url)
    # When the short variant runs: 30 s of bans, trust drops, outages and killed workers
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.soak", "--minutes", "0.5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    # Then it reports zero violations, and the chaos did happen, worker kills included
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "violations: 0 " in run.stdout
    assert "operations: auto_replace" in run.stdout
    steps = int(re.search(r"(\d+) steps", run.stdout).group(1))
    kills = int(re.search(r"worker processes killed\s+(\d+)", run.stdout).group(1))
    assert kills >= steps // KILL_EVERY_STEPS - 1, run.stdout


def test_kills_that_find_no_child_yet_happen_as_soon_as_one_exists() -> None:
    # Given a 55-step soak whose workers have no child to kill for the first 20 steps
    schedule = KillSchedule(random.Random(6), KILL_EVERY_STEPS)
    kills = []
    # When each step kills if one is due and a child exists
    for step in range(55):
        if schedule.due(step) and step >= 20:
            schedule.done(step)
            kills.append(step)
    # Then the first kill happens at step 20 and then one every KILL_EVERY_STEPS steps
    assert kills[0] == 20
    gaps = [later - earlier for earlier, later in itertools.pairwise(kills)]
    assert gaps == [KILL_EVERY_STEPS] * (len(kills) - 1)
    assert len(kills) == (54 - 20) // KILL_EVERY_STEPS + 1
