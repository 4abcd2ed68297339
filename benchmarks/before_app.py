"""The worker as it was before issue 13: `celery -A benchmarks.before_app worker`.

Only for the side-by-side figures of benchmarks/scale.py (what changed: benchmarks/before_code.py):
the swap before issues 13 and 23, with task events and the STARTED state on, as they were.
"""

from benchmarks import before_code
from tasks import app

__all__ = ["app"]

app.conf.broker_url  # noqa: B018  (celeryconfig loaded now: what follows overrides it)
before_code.apply()
app.conf.update(worker_send_task_events=True, task_track_started=True)
