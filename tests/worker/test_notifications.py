"""Slack notifications through real workers: outbox, retries, cool-downs, rollbacks.

The module runs its own worker on a broker of its own, with SLACK_BOT_TOKEN and SLACK_API_URL
pointing at FakeSlack (a local HTTP server speaking chat.postMessage).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa
from celery import Celery

from orchestrator.store import outbox as outbox_writes
from orchestrator.store.schema import alert_state, chips, outbox
from tests.factories import chip_row, make_chip, set_config
from tests.support.fake_slack import FakeSlack
from tests.support.outbox_helpers import make_due
from tests.support.pg_waits import wait_for
from tests.support.private_stack import base_redis_url, claim_redis_db
from tests.worker.conftest import WorkerProcess

pytestmark = pytest.mark.worker


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with claim_redis_db(base_redis_url()) as url:
        yield url


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def worker_extra_env(slack: FakeSlack) -> dict[str, str]:
    return {"SLACK_BOT_TOKEN": slack.token, "SLACK_API_URL": slack.base_url}


@pytest.fixture(autouse=True)
def _slack_up_and_empty(_quiet_worker: None, slack: FakeSlack) -> None:
    """Once the previous test's tasks are done: Slack answers again and has no messages."""
    slack.down, slack.rate_limit_next, slack.fail_next_with = False, 0, None
    slack.refuse_with = None
    slack.messages.clear()


def run(celery_client: Celery, name: str, *args: object, timeout: float = 60) -> dict:
    return celery_client.send_task(name, args=list(args)).get(timeout=timeout)


def outbox_rows(engine: sa.Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(outbox).order_by(outbox.c.id)))


def next_cycle(celery_client: Celery, redis_client: redis.Redis) -> dict:
    """Run orchestrator.run_cycle (one at a time: none is running when it starts)."""
    return run(celery_client, "orchestrator.run_cycle", timeout=30)


def degraded_pairs(engine: sa.Engine, n: int) -> list[str]:
    """n active chips with low trust, and n ready chips to take their place."""
    for _ in range(n):
        make_chip(engine, "ready", trust=95)
    return [make_chip(engine, "active", trust=10) for _ in range(n)]


def test_five_changes_made_while_slack_is_down_are_each_delivered_once_when_it_returns(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery, slack: FakeSlack
) -> None:
    # Given Slack is down while five chips are replaced
    slack.down = True
    for chip in degraded_pairs(clean_db, 5):
        assert run(celery_client, "orchestrator.replace_chip", chip)["status"] == "replaced"
    # When the delivery task runs, fails, and Slack comes back before its retry
    delivery = celery_client.send_task("orchestrator.deliver_notifications")
    wait_for(lambda: any(row.attempts for row in outbox_rows(clean_db)))
    assert all(row.delivered_at is None for row in outbox_rows(clean_db))
    slack.down = False
    outcome = delivery.get(timeout=60)
    # Then each of the five messages reached Slack exactly once
    assert outcome["delivered"] == 5 and outcome["pending"] == 0
    texts = slack.texts()
    assert len(texts) == len(set(texts)) == 5
    assert sorted(texts) == sorted(row.texto for row in outbox_rows(clean_db))
    assert {row.delivered_via for row in outbox_rows(clean_db)} == {"slack"}
    # And delivering again sends nothing twice
    assert run(celery_client, "orchestrator.deliver_notifications")["delivered"] == 0
    assert len(slack.texts()) == 5


def test_a_pool_critical_for_ten_cycles_alerts_once_and_again_after_the_cool_down(
    clean_db: sa.Engine,
    worker: WorkerProcess,
    celery_client: Celery,
    slack: FakeSlack,
    redis_client: redis.Redis,
) -> None:
    # Given a pool below producao_min (critico) that buys nothing
    set_config(clean_db, auto_provision=False, alert_cooldown_minutes=30)
    # When ten cycles run and the outbox is delivered
    healths = {next_cycle(celery_client, redis_client)["saude"] for _ in range(10)}
    run(celery_client, "orchestrator.deliver_notifications")
    # Then ops got one critical alert
    assert healths == {"critico"}
    assert [t for t in slack.texts() if "CRITICO" in t] == slack.texts()
    assert len(slack.texts()) == 1
    # When the cool-down has passed and the pool is still critical
    with clean_db.begin() as conn:
        conn.execute(
            sa.update(alert_state)
            .where(alert_state.c.key == "pool:critico")
            .values(last_sent_at=sa.func.now() - sa.text("interval '31 minutes'"))
        )
    for _ in range(3):
        next_cycle(celery_client, redis_client)
    run(celery_client, "orchestrator.deliver_notifications")
    # Then exactly one more alert went out
    assert len(slack.texts()) == 2


def test_a_revoked_token_keeps_messages_pending_across_runs_then_they_go_out_in_order(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery, slack: FakeSlack
) -> None:
    # Given four alerts queued while Slack answers token_revoked
    slack.refuse_with = "token_revoked"
    texts = [f":rotating_light: alerta {n}" for n in range(4)]
    with clean_db.begin() as conn:
        for texto in texts:
            outbox_writes.enqueue(conn, "alertas", texto)
    log_start = len(worker.log_path.read_text())
    # When the delivery task runs three times, each after the back-off has passed
    outcomes = []
    for _ in range(3):
        outcomes.append(run(celery_client, "orchestrator.deliver_notifications"))
        make_due(clean_db)
    # Then all four are still pending, none via the log, and every run answered "refused"
    assert [(r.delivered_at, r.delivered_via) for r in outbox_rows(clean_db)] == [(None, None)] * 4
    assert slack.texts() == []
    assert [(o["status"], o.get("code"), o["pending"]) for o in outcomes] == [
        ("refused", "token_revoked", 4)
    ] * 3
    # And the cause is in the worker's log once at ERROR, not once per run
    log = worker.log_path.read_text()[log_start:]
    errors = [line for line in log.splitlines() if "ERROR/" in line and "Slack refuses" in line]
    assert len(errors) == 1 and "token_revoked" in errors[0]
    # When ops put a valid token in place and the back-off has passed
    slack.refuse_with = None
    delivered = run(celery_client, "orchestrator.deliver_notifications")
    # Then the four go out once each, in order
    assert (delivered["status"], delivered["delivered"], delivered["pending"]) == (
        "delivered",
        4,
        0,
    )
    assert slack.texts() == texts
    assert {r.delivered_via for r in outbox_rows(clean_db)} == {"slack"}
    assert "accepts messages again" in worker.log_path.read_text()[log_start:]


def test_a_change_rolled_back_at_commit_sends_no_message(
    clean_db: sa.Engine, worker: WorkerProcess, celery_client: Celery, slack: FakeSlack
) -> None:
    # Given the database refuses the next commit that queues a message (after every statement)
    (chip,) = degraded_pairs(clean_db, 1)
    with clean_db.begin() as conn:
        conn.execute(sa.text(FAIL_AT_COMMIT))
    try:
        # When a replacement runs and its transaction is rolled back at commit
        outcome = run(celery_client, "orchestrator.replace_chip", chip)
    finally:
        with clean_db.begin() as conn:
            conn.execute(sa.text(DROP_FAIL_AT_COMMIT))
    run(celery_client, "orchestrator.deliver_notifications")
    # Then nothing changed, nothing is queued and Slack heard nothing
    assert (outcome["status"], outcome["code"]) == ("rejected", "constraint")
    assert chip_row(clean_db, chip).status == "active"
    with clean_db.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(chips.c.status == "ready")).scalar()
    assert outbox_rows(clean_db) == []
    assert slack.texts() == []


FAIL_AT_COMMIT = """
CREATE FUNCTION test_refuse_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'commit refused by the test' USING ERRCODE = 'check_violation'; END $$;
CREATE CONSTRAINT TRIGGER test_refuse_commit AFTER INSERT ON notification_outbox
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_refuse_commit();
"""
DROP_FAIL_AT_COMMIT = """
DROP TRIGGER IF EXISTS test_refuse_commit ON notification_outbox;
DROP FUNCTION IF EXISTS test_refuse_commit();
"""
