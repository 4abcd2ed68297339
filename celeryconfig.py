"""Celery settings for chip-orchestrator. Each line says why it is set.

The broker may be Redis or RabbitMQ (CELERY_BROKER_URL's scheme decides); they redeliver an
unacknowledged message for different reasons, so the settings that depend on that differ.
"""

from kombu import Exchange, Queue

from orchestrator import task_names as names
from orchestrator.adapters import broker_redis, result_redis
from orchestrator.app import bootstrap
from orchestrator.app.settings import WORKER_QUEUES, broker_kind, get_settings

_settings = get_settings()
_cycle = _settings.cycle_seconds

# Where: CELERY_BROKER_URL, else REDIS_URL; the embedded Redis under .data/ when both are unset.
broker_url = bootstrap.broker_url()
# "redis" or "amqp"; any other scheme stops the process here with one clear line.
BROKER = broker_kind(broker_url)
# Results always in Redis (REDIS_URL), whatever the broker: ops read every task's JSON result in
# Flower, `--wait` works, and a foreign client needs only these two URLs.
result_backend = bootstrap.redis_url()
result_expires = 7 * 24 * 3600  # keep a week of results for post-mortems
# Celery's Redis result backend, storing each result in one round trip instead of two (it reads
# the stored result first, to never overwrite a SUCCESS; orchestrator/adapters/result_redis.py
# keeps that rule, inside Redis). Installed under the `redis` scheme: the URL reads as before.
result_redis.install()

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

# Keep retrying the broker at start-up (it may come up after us) and forever after.
broker_connection_retry_on_startup = True
broker_connection_retry = True
broker_connection_max_retries = None
# Redis restarts: reconnect the result backend too (it is Redis on either broker).
redis_backend_health_check_interval = 10
redis_retry_on_timeout = True

if BROKER == "amqp":
    # RabbitMQ requeues an unacknowledged delivery the moment the connection that held it closes.
    # A task left running on the lost connection would run beside its redelivery, with the same
    # task id, and the chip lock (owned by the task id, locks.py) would let both in. So the worker
    # kills its running acks_late tasks when the connection drops; the redelivery is the one run,
    # and the killed run's transaction was never committed (tests/worker/test_amqp_connection_loss.py)
    # unless a swap's last statement and its COMMIT, sent together, had already reached PostgreSQL:
    # the redelivery then waits for the chip's row, finds the swap its own task id did and
    # answers with it (tests/faults/test_worker_loss.py).
    worker_cancel_long_running_tasks_on_connection_loss = True
    # Publisher confirms: send_task returns once RabbitMQ has taken the message, so a cycle's
    # fan-out is never lost in a socket buffer when the broker goes away.
    broker_transport_options = {"confirm_publish": True}
    # Heartbeats every 30 s: a silently dead connection (no clean close) is noticed within about a
    # minute on both sides, which bounds how long a cut-off task can overlap its redelivery.
    broker_heartbeat = 30
    # No visibility_timeout on AMQP: redelivery follows connections, not a clock. Its limit is
    # RabbitMQ's consumer_timeout (30 min by default): a delivery unacknowledged for longer closes
    # the channel. A worker holds a retry's message unacknowledged until its countdown is due, so
    # the longest task (90 s) plus the longest countdown (backoff_max 120 s) must stay below it.
else:
    # Redis redelivers unacked messages after visibility_timeout: it must exceed the longest task
    # plus the longest retry countdown (ETA), or a task would run twice. Set for broker AND results.
    _VISIBILITY = 3600
    broker_transport_options = {"visibility_timeout": _VISIBILITY, "socket_timeout": 10}
    result_backend_transport_options = {"visibility_timeout": _VISIBILITY}
    visibility_timeout = _VISIBILITY
    # On a lost broker connection, let running tasks finish. Cancelling them (True) is meant for
    # AMQP, where the broker requeues unacked messages itself; on Redis, Celery terminates the task
    # and then acks its message by deleting it from the `unacked` hash: the work is lost
    # (tests/faults, Redis restart). Left running, the task finishes and acks over the new
    # connection; had it died, its message stays in `unacked` and is redelivered after
    # visibility_timeout, and the use cases are compare-and-set, so a redelivery never changes
    # anything twice.
    worker_cancel_long_running_tasks_on_connection_loss = False
    # kombu's Redis transport, reusing its bookkeeping client instead of building one per
    # delivery and per ack (orchestrator/adapters/broker_redis.py): the same commands, less CPU.
    # Installed under the `redis` scheme, so URLs (and Flower's broker page) read as before.
    broker_redis.install()

# Queues: a slow Salvy or Slack call never delays a replacement. In production two workers split
# them (settings.SWAP_QUEUES, settings.IO_QUEUES); `make run` and the tests run one for all.
# `celery` is the default queue other services' send_task lands on (the swap worker's).
task_default_queue = "celery"
# Each queue on an exchange and routing key of its own (what Celery creates for a missing queue):
# Celery's default would bind all three to exchange `celery`, key `celery`, so a message published
# to that exchange would be copied into every queue and run three times.
# Classic durable queues, not quorum ones: one RabbitMQ node here and in compose (a quorum queue
# replicates over three or more), a foreign client's default declaration of `celery` is classic
# (a quorum `celery` would refuse it: inequivalent x-queue-type), and retry countdowns work as is.
task_queues = tuple(Queue(name, Exchange(name), routing_key=name) for name in WORKER_QUEUES)
task_routes = {
    **{name: {"queue": "provisioning"} for name in names.SLOW_IO},
    "orchestrator.*": {"queue": "orchestrator"},
}

# Flower. Task events cost each task ~0.15 ms of worker CPU and a publish to the broker even when
# nobody listens, so workers start with them off; Flower turns them on in every worker when it
# starts (and again every few seconds, so a worker started later is covered), as does
# `celery -A tasks control enable_events` (`-E` on the worker: on from start). Flower shows STARTED
# from those events. The result backend's STARTED state (task_track_started, one more Redis write
# and publish per task, ~0.2 ms) is left off: nothing here reads it, and every result stays stored.
# Our own clients mark tasks as sent (the event costs the sender, not the worker).
task_track_started = False
worker_send_task_events = False
task_send_sent_event = True

# Beat: one cycle per period; a tick not started within its period is stale and dropped.
beat_schedule = {
    "run-cycle": {
        "task": names.RUN_CYCLE,
        "schedule": _cycle,
        "options": {"expires": _cycle},
    },
    "deliver-notifications": {
        "task": names.DELIVER,
        "schedule": 10.0,
        "options": {"expires": 10.0},
    },
    "reconcile-provisioning": {
        "task": names.RECONCILE,
        "schedule": 300.0,
        "options": {"expires": 300.0},
    },
}
# The default scheduler (`celery -A tasks beat`) keeps its state in this file.
beat_schedule_filename = str(_settings.data_dir / "celerybeat-schedule")
# Beat wakes at least every 5 s: with RedBeat that is how often the active beat renews its lock.
beat_max_loop_interval = 5

# RedBeat (`celery -A tasks beat -S redbeat.RedBeatScheduler`, compose's two beat replicas): the
# schedule and a lock in Redis; only the lock holder sends ticks, the other waits for the lock.
# Its Redis is REDIS_URL on either broker (never the AMQP broker URL).
redbeat_redis_url = bootstrap.redis_url()
# Client options of its own, so it never borrows the broker's transport options.
redbeat_redis_options = {"socket_timeout": 10, "socket_connect_timeout": 5}
redbeat_key_prefix = "chiporch:redbeat"
# A killed beat's lock expires after 25 s (5 loops); the standby, polling every loop, takes over
# within about 30 s. Renewed every loop, a live beat never loses it.
redbeat_lock_timeout = 5 * beat_max_loop_interval
