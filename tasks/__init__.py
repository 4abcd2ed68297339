"""The Celery app: `celery -A tasks worker` / `celery -A tasks beat` from the repository root."""

from celery import Celery
from celery.signals import worker_process_init

from orchestrator import bootstrap

app = Celery("chip_orchestrator")
app.config_from_object("celeryconfig")


@worker_process_init.connect
def _fresh_connections_after_fork(**_: object) -> None:
    """Each prefork child builds its own engine, Redis and HTTP clients."""
    bootstrap.reset_after_fork()


from tasks import chips, cycle  # noqa: E402,F401  (register the tasks)
