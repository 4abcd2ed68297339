"""Per-chip tasks: thin adapters over orchestrator.app.handlers."""

from orchestrator import task_names as names
from orchestrator.app import handlers
from tasks import app
from tasks.base import OrchestratorTask


@app.task(
    name=names.REPLACE,
    base=OrchestratorTask,
    bind=True,
    soft_time_limit=20,
    time_limit=30,
    counts_in_lock=True,
)
def replace_chip(self: OrchestratorTask, chip_id: str, reason: str | None = None) -> dict:
    """Swap a degraded or banned chip for the best ready one, moving its conversations."""
    return handlers.replace_chip(
        chip_id, reason, owner=self.request.id, retries=self.delivery_retries()
    )


@app.task(
    name=names.PROMOTE_READY,
    base=OrchestratorTask,
    bind=True,
    soft_time_limit=20,
    time_limit=30,
    counts_in_lock=True,
)
def promote_warming_to_ready(self: OrchestratorTask, chip_id: str) -> dict:
    """warming -> ready when trust, phase and warm-up days allow."""
    return handlers.promote_warming_to_ready(
        chip_id, owner=self.request.id, retries=self.delivery_retries()
    )


@app.task(
    name=names.PROMOTE_ACTIVE,
    base=OrchestratorTask,
    bind=True,
    soft_time_limit=20,
    time_limit=30,
    counts_in_lock=True,
)
def promote_ready_to_active(self: OrchestratorTask, chip_id: str) -> dict:
    """ready -> active while production is below producao_min."""
    return handlers.promote_ready_to_active(
        chip_id, owner=self.request.id, retries=self.delivery_retries()
    )


@app.task(
    name=names.PROVISION,
    base=OrchestratorTask,
    bind=True,
    soft_time_limit=60,
    time_limit=90,
)
def provision_chip(self: OrchestratorTask, ddd: int | None = None) -> dict:
    """Buy one number at Salvy (keyed by this task's id, so a retry never buys twice)."""
    return handlers.provision_chip(self.request.id, ddd)


@app.task(
    name=names.CANCEL,
    base=OrchestratorTask,
    bind=True,
    soft_time_limit=60,
    time_limit=90,
    counts_in_lock=True,
)
def cancel_chip(self: OrchestratorTask, chip_id: str) -> dict:
    """Release a degraded or banned number at Salvy and mark it cancelled."""
    return handlers.cancel_chip(chip_id, owner=self.request.id, retries=self.delivery_retries())


@app.task(
    name=names.MIGRATE,
    base=OrchestratorTask,
    bind=True,
    soft_time_limit=20,
    time_limit=30,
    counts_in_lock=True,
)
def migrate_conversations(self: OrchestratorTask, chip_id: str) -> dict:
    """Move the open conversations left on a chip that no longer serves."""
    return handlers.migrate_conversations(
        chip_id, owner=self.request.id, retries=self.delivery_retries()
    )
