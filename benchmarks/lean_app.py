"""The same app without task events and the STARTED state: `run_all --worker-app benchmarks.lean_app`.

Only for measuring what Flower's per-task events cost a replacement; production uses `tasks`.
"""

from tasks import app

app.conf.update(worker_send_task_events=False, task_send_sent_event=False, task_track_started=False)
