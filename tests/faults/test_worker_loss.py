"""A worker child SIGKILLed in the middle of a replacement, and a worker stopped during a deploy."""

from __future__ import annotations

import os
import signal

import pytest
import sqlalchemy as sa
from celery import Celery

from orchestrator.store.schema import operations
from tests.factories import add_conversations, chip_row, conversations_on, make_chip
from tests.faults.conftest import Cluster, assert_no_violations
from tests.support.pg_waits import wait_for, waiting_backends

pytestmark = pytest.mark.faults

#: Where the test parks the replacement before killing it: a lock the worker's transaction
#: must wait for, taken by the test on a separate connection.
KILL_POINTS = {
    # before anything: the chip's own row lock (SELECT .. FOR UPDATE of the degraded chip)
    "before_reading_the_chip": "SELECT 1 FROM chips WHERE id = :old FOR UPDATE",
    # after the ready chip was promoted, while moving the conversations
    "after_promoting_the_ready_chip": (
        "SELECT 1 FROM conversation_chips WHERE chip_id = :old AND active FOR UPDATE"
    ),
    # after the operation row, queuing the Slack message just before COMMIT
    "just_before_commit": "LOCK TABLE notification_outbox IN EXCLUSIVE MODE",
}


def count_ops(engine: sa.Engine, operacao: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(operations.c.operacao == operacao)
        ).scalar_one()


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_replacement_killed_mid_transaction_is_redone_exactly_once(
    clean_db: sa.Engine, cluster: Cluster, env: dict, celery_client: Celery, point: str
) -> None:
    # Given a low-trust active chip with conversations, two ready chips, and one worker process
    old = make_chip(clean_db, "active", trust=30)
    add_conversations(clean_db, old, 4)
    ready = [make_chip(clean_db, "ready", trust=t) for t in (95, 90)]
    worker = cluster.worker(env, concurrency=1)
    # And the test holding a lock the replacement needs at this point of its transaction
    blocker = clean_db.connect()
    blocker.begin()
    blocker.execute(sa.text(KILL_POINTS[point]), {"old": old})
    # When the replacement is dispatched and parked on that lock
    result = celery_client.send_task("orchestrator.replace_chip", args=[old, "low_trust"])
    wait_for(lambda: waiting_backends(clean_db) >= 1)
    # And its worker child is SIGKILLed there, then the lock is released
    (child,) = worker.children()
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: child not in worker.children() and worker.children())
    blocker.rollback()
    blocker.close()
    # Then the task is redelivered and completes
    outcome = result.get(timeout=60)
    assert outcome["status"] == "replaced", outcome
    # And exactly one replacement exists: the best ready chip is active, the old one degraded
    assert count_ops(clean_db, "auto_replace") == 1
    assert chip_row(clean_db, ready[0]).status == "active"
    assert chip_row(clean_db, ready[1]).status == "ready"
    assert chip_row(clean_db, old).status == "degraded"
    assert conversations_on(clean_db, ready[0]) == 4
    assert "WorkerLostError" in worker.log() or "SIGKILL" in worker.log()
    assert_no_violations(clean_db)


def test_a_warm_shutdown_loses_no_reserved_or_queued_task(
    clean_db: sa.Engine, cluster: Cluster, env: dict, celery_client: Celery
) -> None:
    # Given 12 low-trust chips with conversations and 12 ready chips
    olds = [make_chip(clean_db, "active", trust=30) for _ in range(12)]
    for chip in olds:
        add_conversations(clean_db, chip, 2)
    for _ in range(12):
        make_chip(clean_db, "ready", trust=95)
    worker = cluster.worker(env, concurrency=2)
    # And the test holding every conversation row, so the first replacements park mid-way
    blocker = clean_db.connect()
    blocker.begin()
    blocker.execute(sa.text("SELECT 1 FROM conversation_chips WHERE active FOR UPDATE"))
    results = [
        celery_client.send_task("orchestrator.replace_chip", args=[c, "low_trust"]) for c in olds
    ]
    wait_for(lambda: waiting_backends(clean_db) >= 2)
    # When the worker gets SIGTERM (a deploy) with 2 tasks running and the rest reserved/queued
    worker.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "warm shutdown" in worker.log().lower(), 10)
    blocker.rollback()
    blocker.close()
    assert worker.stop(timeout=30) == 0
    done_before = count_ops(clean_db, "auto_replace")
    # And a new worker starts
    cluster.worker(env, concurrency=2)
    # Then every task completes, each chip replaced exactly once
    outcomes = [r.get(timeout=60) for r in results]
    assert [o["status"] for o in outcomes] == ["replaced"] * 12
    assert done_before < 12
    assert count_ops(clean_db, "auto_replace") == 12
    assert {chip_row(clean_db, c).status for c in olds} == {"degraded"}
    assert_no_violations(clean_db)
