"""Today's app with task events on, as while Flower watches: `celery -A benchmarks.watched_app worker`.

Workers start with task events off (celeryconfig.py) and Flower turns them on when it starts;
this worker has them on from the start, to measure what they cost a replacement.
"""

from tasks import app

app.conf.update(worker_send_task_events=True)
