"""A test-only task that kills its own worker process on every delivery (a poison message).

Loaded into a worker with `--include tests.faults.poison_tasks`; never part of production.
"""

from __future__ import annotations

import os

from orchestrator.app import bootstrap
from tasks import app
from tasks.base import OrchestratorTask


@app.task(name="faults.crash_every_time", base=OrchestratorTask, bind=True, time_limit=30)
def crash_every_time(self: OrchestratorTask, counter_key: str) -> dict:
    """Count this delivery in Redis, then die as a segfaulting C extension would."""
    bootstrap.redis_client().incr(counter_key)
    os._exit(1)
