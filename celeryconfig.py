"""Celery settings for chip-orchestrator. Each line says why it is set."""

from kombu import Queue

from orchestrator import bootstrap
from orchestrator.settings import WORKER_QUEUES, get_settings

_settings = get_settings()
_cycle = _settings.cycle_seconds

# Where: REDIS_URL (or CELERY_BROKER_URL); the embedded Redis under .data/ when unset.
broker_url = bootstrap.broker_url()
# Results in Redis too, so ops read every task's JSON result in Flower and `--wait` works.
result_backend = bootstrap.redis_url()
result_expires = 7 * 24 * 3600  # keep a week of results for post-mortems

# JSON only: a pickled message could run arbitrary code in a worker; refuse it.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# Ack after the task ran, and requeue it if its process dies: a SIGKILLed replace is redone.
task_acks_late = True
task_reject_on_worker_lost = True
# One message at a time per process: a slow task never sits on others' messages.
worker_prefetch_multiplier = 1
# Default limits; each task sets its own tighter ones. Hard limit < lock TTL (locks.py).
task_soft_time_limit = 60
task_time_limit = 90

# Redis redelivers unacked messages after visibility_timeout: it must exceed the longest task
# plus the longest retry countdown (ETA), or a task would run twice. Set for broker AND results.
_VISIBILITY = 3600
broker_transport_options = {"visibility_timeout": _VISIBILITY, "socket_timeout": 10}
result_backend_transport_options = {"visibility_timeout": _VISIBILITY}
visibility_timeout = _VISIBILITY

# Keep retrying the broker at start-up (Redis may come up after us) and forever after.
broker_connection_retry_on_startup = True
broker_connection_retry = True
broker_connection_max_retries = None
# On a lost broker connection, let running tasks finish. Cancelling them (True) is meant for
# AMQP, where the broker requeues unacked messages itself; on Redis, Celery terminates the task and
# then acks its message by deleting it from the `unacked` hash: the work is lost (tests/faults,
# Redis restart). Left running, the task finishes and acks over the new connection; had it died,
# its message stays in `unacked` and is redelivered after visibility_timeout, and the use cases
# are compare-and-set, so a redelivery never changes anything twice.
worker_cancel_long_running_tasks_on_connection_loss = False
# Redis restarts: reconnect the result backend too.
redis_backend_health_check_interval = 10
redis_retry_on_timeout = True

# Queues: a slow Salvy or Slack call never delays a replacement. `celery` is the default queue
# other services' send_task lands on; workers consume all three.
task_default_queue = "celery"
task_queues = tuple(Queue(name) for name in WORKER_QUEUES)
task_routes = {
    "orchestrator.provision_chip": {"queue": "provisioning"},
    "orchestrator.cancel_chip": {"queue": "provisioning"},
    "orchestrator.reconcile_provisioning": {"queue": "provisioning"},
    "orchestrator.deliver_notifications": {"queue": "provisioning"},
    "orchestrator.*": {"queue": "orchestrator"},
}

# Flower: show STARTED, and events for every task.
task_track_started = True
worker_send_task_events = True
task_send_sent_event = True

# Beat: one cycle per period; a tick not started within its period is stale and dropped.
beat_schedule = {
    "run-cycle": {
        "task": "orchestrator.run_cycle",
        "schedule": _cycle,
        "options": {"expires": _cycle},
    },
    "deliver-notifications": {
        "task": "orchestrator.deliver_notifications",
        "schedule": 10.0,
        "options": {"expires": 10.0},
    },
    "reconcile-provisioning": {
        "task": "orchestrator.reconcile_provisioning",
        "schedule": 300.0,
        "options": {"expires": 300.0},
    },
}
beat_schedule_filename = str(_settings.data_dir / "celerybeat-schedule")
