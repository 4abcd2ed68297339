"""The Celery app: `celery -A tasks worker` / `celery -A tasks beat` from the repository root."""

from celery import Celery
from celery.signals import worker_process_init

from orchestrator.app import bootstrap

app = Celery("chip_orchestrator")
app.config_from_object("celeryconfig")


@worker_process_init.connect
def _fresh_connections_after_fork(**_: object) -> None:
    """Each prefork child builds its own engine, Redis and HTTP clients, and warms them.

    Warming here spares the child's first task ~100 ms of connection set-up (see
    docs/benchmarks.md); a server that is down only means the task connects later.
    """
    bootstrap.reset_after_fork()
    bootstrap.warm_up()


from tasks import chips, cycle, webhooks  # noqa: E402,F401  (register the tasks)
