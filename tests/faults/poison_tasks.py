"""Test-only tasks that kill their own worker process on every delivery (poison messages).

Loaded into a worker with `--include tests.faults.poison_tasks`; never part of production.
"""

from __future__ import annotations

import os

from orchestrator.app import bootstrap, handlers
from tasks import app
from tasks.base import OrchestratorTask


@app.task(name="faults.crash_every_time", base=OrchestratorTask, bind=True, time_limit=30)
def crash_every_time(self: OrchestratorTask, counter_key: str) -> dict:
    """Count this delivery in Redis, then die as a segfaulting C extension would."""
    bootstrap.redis_client().incr(counter_key)
    os._exit(1)


@app.task(
    name="faults.crash_holding_a_chip",
    base=OrchestratorTask,
    bind=True,
    time_limit=30,
    counts_in_lock=True,
)
def crash_holding_a_chip(self: OrchestratorTask, chip_id: str, counter_key: str) -> dict:
    """Take the chip's lock as the per-chip tasks do (the delivery counted in that call), then die."""

    def crash(_held: object) -> dict:
        bootstrap.redis_client().incr(counter_key)
        os._exit(1)

    return handlers.with_chip_lock(
        "faults.crash_holding_a_chip",
        chip_id,
        crash,
        owner=self.request.id,
        retries=self.delivery_retries(),
    )
