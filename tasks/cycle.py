"""Periodic tasks: the cycle, outbox delivery, purchase reconciliation."""

from orchestrator import task_names as names
from orchestrator.app import handlers
from tasks import app
from tasks.base import OrchestratorTask


def _send(name: str, args: list, task_id: str | None) -> None:
    app.send_task(name, args=args, task_id=task_id)


@app.task(
    name=names.RUN_CYCLE,
    base=OrchestratorTask,
    max_retries=0,  # never retried: the next beat tick is the retry, with a fresh snapshot
    soft_time_limit=30,
    time_limit=45,
)
def run_cycle() -> dict:
    """Plan with a few aggregate queries and fan out one task per chip / number to buy."""
    return handlers.run_cycle(_send)


@app.task(
    name=names.DELIVER,
    base=OrchestratorTask,
    max_retries=8,
    soft_time_limit=60,
    time_limit=90,
)
def deliver_notifications() -> dict:
    """Post pending outbox messages to Slack (or the log without a token)."""
    return handlers.deliver_notifications()


@app.task(
    name=names.RECONCILE,
    base=OrchestratorTask,
    soft_time_limit=120,
    time_limit=150,
)
def reconcile_provisioning() -> dict:
    """Settle purchases stuck past their deadline; report Salvy numbers with no chip."""
    return handlers.reconcile_provisioning()
