"""The worker as it was before issue 23: `celery -A benchmarks.previous_app worker`.

Only for the side-by-side figures of benchmarks/swap_floor.py (what changed:
benchmarks/before_code.py, `apply_previous`): the swap's 12 statements, a pre-ping on every
checkout, and task events and the STARTED state on, as they were.
"""

from benchmarks import before_code
from tasks import app

__all__ = ["app"]

app.conf.broker_url  # noqa: B018  (celeryconfig loaded now: what follows overrides it)
before_code.apply_previous()
app.conf.update(worker_send_task_events=True, task_track_started=True)
