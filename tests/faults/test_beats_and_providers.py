"""Two beats at once, a flaky Salvy, a Slack outage, and a poison message."""

from __future__ import annotations

import collections
import re
import time
import uuid

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from orchestrator.dev.salvy_standin import SalvyStandin
from orchestrator.store.schema import chips, outbox
from tests.factories import add_conversations, make_chip, set_config
from tests.faults.conftest import QUEUES, Cluster, assert_no_violations
from tests.faults.test_worker_loss import count_ops
from tests.support.fake_slack import FakeSlack
from tests.support.pg_waits import wait_for
from tests.support.private_stack import broker_url_for, queue_depths

pytestmark = pytest.mark.faults


def scalar(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar_one()


#: Worker and beat log lines: a task received or ended (succeeded, raised, retried, or dropped
#: unrun: a beat tick expires after about one period), a cycle done, a tick sent.
RECEIVED = re.compile(r"Task \S+\[([^\]]+)\] received")
ENDED = re.compile(r"Task \S+\[([^\]]+)\] (?:succeeded|raised|retry)")
DROPPED = re.compile(r"Discarding revoked task: \S+\[([^\]]+)\]")
CYCLE_DONE = re.compile(r"run_cycle\[[^\]]+\] succeeded")
TICK = "Sending due task run-cycle (orchestrator.run_cycle)"


def settled(worker_log: str, broker_url: str) -> bool:
    """Nothing queued, and every task the worker received has ended (as often as received)."""
    if sum(queue_depths(broker_url, QUEUES.split(",")).values()):
        return False
    ended = ENDED.findall(worker_log) + DROPPED.findall(worker_log)
    return collections.Counter(RECEIVED.findall(worker_log)) == collections.Counter(ended)


def test_two_beats_at_once_change_nothing_twice(
    clean_db: sa.Engine, cluster: Cluster, env: dict, redis_url: str
) -> None:
    # Given a pool short of 2 active chips (4 ready), and a reserve 3 short once they are
    # promoted (2 ready left, 0 warming; ready_min 2 + warmup_buffer 3)
    set_config(clean_db, producao_min=2, producao_max=4, warmup_buffer=3, ready_min=2)
    for _ in range(4):
        make_chip(clean_db, "ready", trust=95)
    worker = cluster.worker(env, concurrency=2)
    # When two beats tick every second, until each sent 4 ticks and the worker ran 8 cycles
    # (real signals, however slowly a busy machine gets there)
    beats = [cluster.beat(env), cluster.beat(env)]
    wait_for(
        lambda: (
            all(b.log().count(TICK) >= 4 for b in beats)
            and len(CYCLE_DONE.findall(worker.log())) >= 8
        ),
        180,
    )
    for beat in beats:
        beat.stop()
    # ... and every task sent until then has run (the cycles' promotions and purchases too)
    wait_for(lambda: settled(worker.log(), broker_url_for(redis_url)), 120)
    # Then every tick either planned or was skipped because a cycle was running at that moment
    log = worker.log()
    planned = len(re.findall(r"run_cycle\[[^\]]+\] succeeded[^\n]*'status': 'planned'", log))
    skipped = re.findall(r"run_cycle\[[^\]]+\] succeeded[^\n]*'status': 'skipped'[^\n]*", log)
    assert planned >= 1
    assert all("cycle in progress" in line for line in skipped)
    assert re.search(r"run_cycle\[[^\]]+\] raised", log) is None
    # And the changes happened once: exactly 2 promotions, exactly 3 purchases
    assert count_ops(clean_db, "promotion_ready_active") == 2
    assert scalar(clean_db, "SELECT count(*) FROM chips WHERE status = 'warming'") == 3
    assert scalar(clean_db, "SELECT count(*) FROM chips WHERE provisioning_name IS NOT NULL") == 3
    assert_no_violations(clean_db)


def test_a_flaky_salvy_never_buys_one_intent_twice(
    clean_db: sa.Engine, cluster: Cluster, env: dict, salvy: SalvyStandin, celery_client: Celery
) -> None:
    # Given Salvy answering 500 twice and hanging after two purchases (past the client's timeout)
    salvy.set_faults(fail_next=2, timeout_after_purchase=2, hang_seconds=20)
    cluster.worker(env, concurrency=2)
    # When four purchases are dispatched
    results = [celery_client.send_task("orchestrator.provision_chip") for _ in range(4)]
    outcomes = [r.get(timeout=120) for r in results]
    # Then each completes once, and Salvy sold exactly as many numbers as we hold chips
    assert [o["status"] for o in outcomes] == ["provisioned"] * 4
    with clean_db.connect() as conn:
        held = set(
            conn.execute(sa.select(chips.c.salvy_id).where(chips.c.salvy_id.is_not(None))).scalars()
        )
    live = {k for k, v in salvy.numbers.items() if v["status"] != "canceled"}
    assert salvy.purchases == 4
    assert held == live
    assert count_ops(clean_db, "auto_provision") == 4
    assert_no_violations(clean_db)


def test_a_slack_outage_loses_no_alert_and_sends_none_twice(
    clean_db: sa.Engine, cluster: Cluster, env: dict, celery_client: Celery
) -> None:
    # Given Slack down, and three replacements that each queue a message
    slack = FakeSlack()
    slack.start()
    slack.down = True
    env = {**env, "SLACK_BOT_TOKEN": slack.token, "SLACK_API_URL": slack.base_url}
    cluster.worker(env, concurrency=2)
    for _ in range(3):
        old = make_chip(clean_db, "active", trust=30)
        add_conversations(clean_db, old, 1)
        make_chip(clean_db, "ready", trust=95)
        celery_client.send_task("orchestrator.replace_chip", args=[old, "low_trust"]).get(
            timeout=30
        )
    # When delivery runs during the outage and Slack comes back a few seconds later
    first = celery_client.send_task("orchestrator.deliver_notifications")
    wait_for(
        lambda: scalar(clean_db, "SELECT coalesce(max(attempts), 0) FROM notification_outbox") >= 1
    )
    time.sleep(2)
    slack.down = False
    celery_client.send_task("orchestrator.deliver_notifications").get(timeout=60)
    first.get(timeout=120, propagate=False)
    # Then every message reached Slack exactly once
    with clean_db.connect() as conn:
        texts = list(conn.execute(sa.select(outbox.c.texto).order_by(outbox.c.id)).scalars())
        pending = conn.execute(
            sa.select(sa.func.count()).where(outbox.c.delivered_at.is_(None))
        ).scalar_one()
    slack.stop()
    assert len(texts) == 3
    assert pending == 0
    assert sorted(slack.texts()) == sorted(texts)
    assert_no_violations(clean_db)


@pytest.mark.parametrize("task", ["faults.crash_every_time", "faults.crash_holding_a_chip"])
def test_a_task_that_kills_its_worker_every_time_stops_and_alerts(
    clean_db: sa.Engine,
    cluster: Cluster,
    env: dict,
    celery_client: Celery,
    redis_url: str,
    task: str,
) -> None:
    # Given a worker that also runs a task which kills its own process on every delivery: one
    # counted by the task base, one by the call that takes its chip's lock (as per-chip tasks)
    worker = cluster.worker(env, 1, "--include", "tests.faults.poison_tasks")
    counter = f"chiporch:poison-runs:{uuid.uuid4().hex}"
    chip = make_chip(clean_db, "active")
    args = [counter] if task == "faults.crash_every_time" else [chip, counter]
    # When that task is sent once
    result = celery_client.send_task(task, args=args)
    outcome = result.get(timeout=120)
    # Then it ran a bounded number of times (MAX_DELIVERIES), and came back failed as poison
    from tasks.base import MAX_DELIVERIES

    client = redis.Redis.from_url(redis_url)
    runs = int(client.get(counter))
    assert runs == MAX_DELIVERIES
    assert outcome["status"] == "failed" and outcome["code"] == "poison"
    assert worker.log().count("WorkerLostError") >= MAX_DELIVERIES
    # And the chip's lock, left by each crash and taken over by the next delivery, is released
    assert client.exists(f"chiporch:lock:chip:{chip}") == 0
    # And ops are alerted through the outbox
    with clean_db.connect() as conn:
        alerts = list(
            conn.execute(sa.select(outbox.c.texto).where(outbox.c.canal == "alertas")).scalars()
        )
    assert any(task in a and "derrubou" in a for a in alerts)
    assert_no_violations(clean_db)
