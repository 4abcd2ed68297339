"""The outbox's write side and backlog: alert cool-downs claimed in one statement, counts and ages."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from orchestrator.adapters.slack import SlackSender
from orchestrator.services import delivery
from orchestrator.store import outbox
from orchestrator.store.schema import alert_state
from orchestrator.store.schema import outbox as outbox_table
from tests.support.fake_slack import FakeSlack
from tests.support.outbox_helpers import queue

pytestmark = pytest.mark.db


def test_pending_count_and_oldest_age_follow_the_queue(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender
) -> None:
    assert outbox.pending_count(clean_db) == 0
    assert outbox.oldest_pending_age_seconds(clean_db) is None
    (first,) = queue(clean_db, ("alertas", "velha"))
    with clean_db.begin() as conn:
        conn.execute(
            sa.update(outbox_table)
            .where(outbox_table.c.id == first)
            .values(created_at=sa.func.now() - timedelta(minutes=5))
        )
    queue(clean_db, ("alertas", "nova"))

    assert outbox.pending_count(clean_db) == 2
    assert 299 < outbox.oldest_pending_age_seconds(clean_db) < 360

    delivery.deliver_pending(clean_db, sender, limit=1)
    assert outbox.pending_count(clean_db) == 1
    assert outbox.oldest_pending_age_seconds(clean_db) < 60


def alert(engine: sa.Engine, key: str, cooldown: timedelta | None) -> bool:
    with engine.begin() as conn:
        return outbox.alert_once(conn, key, f"alerta {key}", cooldown=cooldown)


def age_alert(engine: sa.Engine, key: str, by: timedelta) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(alert_state)
            .where(alert_state.c.key == key)
            .values(last_sent_at=alert_state.c.last_sent_at - by)
        )


def test_the_same_alert_twice_within_its_cooldown_queues_one_message(clean_db: sa.Engine) -> None:
    cooldown = timedelta(minutes=30)

    assert alert(clean_db, "pool:critico", cooldown) is True
    assert alert(clean_db, "pool:critico", cooldown) is False

    assert outbox.pending_count(clean_db) == 1


def test_an_alert_older_than_its_cooldown_is_queued_again(clean_db: sa.Engine) -> None:
    cooldown = timedelta(minutes=30)
    alert(clean_db, "pool:sem_ready", cooldown)

    age_alert(clean_db, "pool:sem_ready", timedelta(minutes=31))

    assert alert(clean_db, "pool:sem_ready", cooldown) is True
    assert alert(clean_db, "pool:sem_ready", cooldown) is False
    assert outbox.pending_count(clean_db) == 2


def test_an_alert_without_cooldown_is_only_ever_queued_once(clean_db: sa.Engine) -> None:
    assert alert(clean_db, "chip:42:low_trust", None) is True
    age_alert(clean_db, "chip:42:low_trust", timedelta(days=365))

    assert alert(clean_db, "chip:42:low_trust", None) is False
    assert outbox.pending_count(clean_db) == 1
