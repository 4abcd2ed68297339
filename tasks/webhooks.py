"""Tasks the webhook receiver enqueues besides replace_chip: thin adapters over app/."""

from orchestrator import task_names as names
from orchestrator.app import webhook_handlers
from tasks import app
from tasks.base import OrchestratorTask


@app.task(
    name=names.SALVY_EVENT,
    base=OrchestratorTask,
    bind=True,
    soft_time_limit=60,
    time_limit=90,
)
def salvy_event(self: OrchestratorTask, kind: str, account_id: str, message_id: str = "") -> dict:
    """A verified Salvy webhook: re-read the account at Salvy, then replace / cancel / tell ops."""
    return webhook_handlers.salvy_event(kind, account_id, message_id, owner=self.request.id)
