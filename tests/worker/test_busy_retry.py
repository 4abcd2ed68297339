"""A replace whose ready chips are busy in another task retries through Celery, never falls back."""

from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from orchestrator.store.schema import outbox
from tests.factories import add_conversations, chip_row, conversations_on, make_chip
from tests.support.pg_waits import wait_for, wait_until
from tests.worker.conftest import WorkerProcess

pytestmark = pytest.mark.worker


def outbox_texts(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(outbox.c.texto)).scalars())


def attempt_started(client: redis.Redis, task_id: str, retries: int) -> bool:
    """The task base counts each delivery per retry number in Redis (poison detection)."""
    return client.exists(f"chiporch:deliveries:{task_id}:{retries}") == 1


@pytest.fixture
def banned_pool(clean_db: sa.Engine) -> tuple[str, str, str]:
    """A banned chip with 3 conversations, a healthy active chip and one fit ready chip."""
    banned = make_chip(clean_db, "banned")
    add_conversations(clean_db, banned, 3)
    healthy = make_chip(clean_db, "active", trust=95)
    ready = make_chip(clean_db, "ready", trust=95)
    return banned, healthy, ready


def test_a_banned_replace_retries_while_its_ready_chip_is_busy_then_takes_it(
    clean_db: sa.Engine,
    worker: WorkerProcess,
    celery_client: Celery,
    redis_client: redis.Redis,
    banned_pool: tuple[str, str, str],
) -> None:
    banned, healthy, ready = banned_pool
    # Given another task holding the only ready chip's row
    blocker = clean_db.connect()
    blocker.begin()
    blocker.execute(sa.text("SELECT 1 FROM chips WHERE id = :id FOR UPDATE"), {"id": ready})
    try:
        # When the banned chip's replace arrives, and has been retried once
        result = celery_client.send_task("orchestrator.replace_chip", args=[banned, "banned"])
        wait_for(lambda: attempt_started(redis_client, result.id, retries=1))
        # Then meanwhile nothing took the no-ready fallback
        assert conversations_on(clean_db, healthy) == 0
        assert conversations_on(clean_db, banned) == 3
        assert chip_row(clean_db, banned).degraded_at is None
        assert outbox_texts(clean_db) == []
    finally:
        blocker.rollback()
        blocker.close()
    # And once the other task lets go, a retry takes that ready chip
    outcome = result.get(timeout=30)
    assert (outcome["status"], outcome["replacement_id"]) == ("replaced", ready)
    assert conversations_on(clean_db, ready) == 3
    assert conversations_on(clean_db, healthy) == 0


def test_a_replace_busy_past_its_retries_fails_changing_nothing_and_tells_ops_once(
    clean_db: sa.Engine,
    worker: WorkerProcess,
    celery_client: Celery,
    banned_pool: tuple[str, str, str],
) -> None:
    banned, healthy, ready = banned_pool
    blocker = clean_db.connect()
    blocker.begin()
    blocker.execute(sa.text("SELECT 1 FROM chips WHERE id = :id FOR UPDATE"), {"id": ready})
    try:
        result = celery_client.send_task("orchestrator.replace_chip", args=[banned, "banned"])
        result.get(timeout=60, propagate=False)
    finally:
        blocker.rollback()
        blocker.close()
    # The task gave up after its bounded retries: still unhandled, so the next cycle re-plans it
    assert result.state == "FAILURE"
    assert chip_row(clean_db, banned).degraded_at is None
    assert conversations_on(clean_db, banned) == 3
    assert conversations_on(clean_db, healthy) == 0
    assert chip_row(clean_db, ready).status == "ready"
    # Celery stores FAILURE before it calls on_failure, which queues the alert: wait for it
    texts = wait_until(lambda: outbox_texts(clean_db), timeout=10, what="no failure alert queued")
    assert len(texts) == 1 and "orchestrator.replace_chip" in texts[0]
