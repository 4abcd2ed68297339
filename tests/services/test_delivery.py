"""Outbox delivery on the real database, through a real slack-sdk WebClient to a local Slack."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from orchestrator.adapters.slack import LogSender, SlackSender
from orchestrator.app import bootstrap
from orchestrator.errors import TransientError
from orchestrator.services import delivery
from orchestrator.store import outbox
from orchestrator.store.schema import outbox as outbox_table
from tests.support.fake_slack import FakeSlack
from tests.support.outbox_helpers import TOKEN, make_due, queue, rows, settings_for

pytestmark = pytest.mark.db

LogCapture = pytest.LogCaptureFixture


def counts(result: dict) -> tuple[int, int, int]:
    """(delivered, fallback, pending) of one deliver_pending result."""
    return result["delivered"], result["fallback"], result["pending"]


def test_queued_messages_are_delivered_once_in_order_to_their_channels(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender
) -> None:
    queue(clean_db, ("alertas", "*pool crítico*"), ("operacoes", "chip trocado"), ("alertas", "3"))

    result = delivery.deliver_pending(clean_db, sender)

    assert result["status"] == "delivered" and counts(result) == (3, 0, 0)
    assert slack.messages == [
        ("#alertas-test", "*pool crítico*"),
        ("#operacoes-test", "chip trocado"),
        ("#alertas-test", "3"),
    ]
    assert all(r.delivered_via == "slack" and r.attempts == 1 for r in rows(clean_db))
    assert delivery.deliver_pending(clean_db, sender)["delivered"] == 0
    assert len(slack.messages) == 3


def test_slack_down_keeps_five_state_changes_pending_then_delivers_each_exactly_once(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender
) -> None:
    slack.down = True
    queue(clean_db, *[("operacoes", f"mudança {n}") for n in range(5)])

    with pytest.raises(TransientError, match="503"):
        delivery.deliver_pending(clean_db, sender)

    assert outbox.pending_count(clean_db) == 5
    assert slack.messages == []
    first = rows(clean_db)[0]
    assert first.attempts == 1 and "503" in first.last_error and first.delivered_at is None

    slack.down = False
    assert counts(delivery.deliver_pending(clean_db, sender)) == (5, 0, 0)
    assert counts(delivery.deliver_pending(clean_db, sender)) == (0, 0, 0)
    assert slack.texts() == [f"mudança {n}" for n in range(5)]


def test_messages_wait_while_slack_refuses_connections_and_go_out_once_it_listens_again(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender
) -> None:
    queue(clean_db, ("alertas", "a"), ("alertas", "b"))
    slack.stop()

    with pytest.raises(TransientError, match="unreachable"):
        delivery.deliver_pending(clean_db, sender)
    assert outbox.pending_count(clean_db) == 2

    slack.start()
    assert delivery.deliver_pending(clean_db, sender)["delivered"] == 2
    assert slack.texts() == ["a", "b"]


def test_a_rate_limited_post_is_retried_after_retry_after_and_delivered_once(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender
) -> None:
    queue(clean_db, ("alertas", "sem chip ready"))
    slack.rate_limit_next = 1

    assert delivery.deliver_pending(clean_db, sender)["delivered"] == 1

    assert slack.calls == 2
    assert slack.texts() == ["sem chip ready"]


def test_a_rate_limit_longer_than_the_sdk_retries_is_a_transient_error_with_retry_after(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender
) -> None:
    queue(clean_db, ("alertas", "x"))
    slack.rate_limit_next = 3

    with pytest.raises(TransientError) as raised:
        delivery.deliver_pending(clean_db, sender)

    assert raised.value.retry_after == 1
    assert slack.calls == 3 and outbox.pending_count(clean_db) == 1


def test_a_rolled_back_enqueue_delivers_nothing(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender
) -> None:
    with clean_db.connect() as conn:
        transaction = conn.begin()
        outbox.enqueue(conn, "alertas", "troca que falhou")
        transaction.rollback()

    assert counts(delivery.deliver_pending(clean_db, sender)) == (0, 0, 0)
    assert slack.calls == 0


def test_without_a_token_messages_go_to_the_log_and_are_marked_delivered_via_log(
    clean_db: sa.Engine, caplog: LogCapture
) -> None:
    caplog.set_level(logging.INFO, logger=delivery.logger.name)
    sender = bootstrap.build_sender(settings_for(None, token=None))
    assert isinstance(sender, LogSender)
    queue(clean_db, ("alertas", "pool crítico"), ("operacoes", "chip promovido"))

    assert counts(delivery.deliver_pending(clean_db, sender)) == (2, 0, 0)

    logged = {r.getMessage(): r.levelno for r in caplog.records if r.name == delivery.logger.name}
    assert logged == {"[alertas] pool crítico": logging.WARNING, "[operacoes] chip promovido": 20}
    assert [r.delivered_via for r in rows(clean_db)] == ["log", "log"]


def test_the_token_never_appears_in_logs_exceptions_repr_or_the_outbox(
    clean_db: sa.Engine,
    slack: FakeSlack,
    sender: SlackSender,
    caplog: LogCapture,
) -> None:
    caplog.set_level(logging.DEBUG)
    queue(clean_db, *[("alertas", f"m{n}") for n in range(3)])
    texts: list[str] = [repr(sender), repr(settings_for(slack.base_url))]

    slack.down = True
    with pytest.raises(TransientError) as down:
        delivery.deliver_pending(clean_db, sender)
    slack.down, slack.fail_next_with = False, "invalid_auth"
    delivery.deliver_pending(clean_db, sender)
    slack.stop()
    queue(clean_db, ("alertas", "m3"))
    make_due(clean_db)
    with pytest.raises(TransientError) as unreachable:
        delivery.deliver_pending(clean_db, sender)

    for error in (down.value, unreachable.value):
        texts += [str(error), repr(error), str(error.__cause__), str(error.__context__)]
    texts += [caplog.text, *(str(r.last_error) for r in rows(clean_db))]
    assert "invalid_auth" in caplog.text, "the checks above did run"
    assert not [t for t in texts if TOKEN in t or "NeverLogThisToken" in t]


@contextlib.contextmanager
def holding_delivery_lock(engine: sa.Engine) -> Iterator[None]:
    """The deliverers' advisory lock, held by a session of the test's own."""
    key = delivery.DELIVERY_LOCK_KEY
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar_one()
        try:
            yield
        finally:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))


def test_a_deliverer_finding_another_at_work_answers_busy_and_sends_nothing(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender
) -> None:
    # Given another deliverer holds the delivery lock (here: the test's own connection)
    queue(clean_db, ("alertas", "a"), ("alertas", "b"))
    with holding_delivery_lock(clean_db):
        # When a deliverer runs
        busy = delivery.deliver_pending(clean_db, sender)
    # Then it returned at once without calling Slack
    assert (busy["status"], busy["delivered"], busy["pending"]) == ("busy", 0, 2)
    assert slack.calls == 0
    # And once the other is done, the next run delivers
    assert delivery.deliver_pending(clean_db, sender)["delivered"] == 2


def test_two_deliverers_at_once_one_posts_everything_the_other_is_busy(
    clean_db: sa.Engine, slack: FakeSlack
) -> None:
    # Given twenty messages and a first deliverer parked inside its first Slack call
    texts = [f"msg {n}" for n in range(20)]
    queue(clean_db, *[("operacoes", t) for t in texts])
    first_sender, second_sender = (
        bootstrap.build_sender(settings_for(slack.base_url)) for _ in range(2)
    )
    slack.hold()
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(delivery.deliver_pending, clean_db, first_sender)
        assert slack.waiting.wait(10)
        # When a second deliverer runs meanwhile
        second = delivery.deliver_pending(clean_db, second_sender)
        slack.release()
        first_result = first.result(timeout=30)
    # Then the second answered busy and the first posted each message exactly once
    assert second["status"] == "busy" and second["delivered"] == 0
    assert first_result["delivered"] == 20
    assert slack.texts() == texts
    assert all(r.attempts == 1 for r in rows(clean_db))


def test_no_transaction_or_row_lock_is_held_while_slack_is_called(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender
) -> None:
    # Given a deliverer parked inside its Slack call (Slack is slow to answer)
    (first, _) = queue(clean_db, ("alertas", "a"), ("alertas", "b"))
    slack.hold()
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(delivery.deliver_pending, clean_db, sender)
        assert slack.waiting.wait(10)
        try:
            # When another session looks at the database meanwhile
            with clean_db.connect() as conn:
                in_transaction = conn.execute(sa.text(IDLE_IN_TRANSACTION)).scalars().all()
            with clean_db.begin() as conn:
                locked = conn.execute(sa.text(LOCK_NOWAIT), {"id": first}).scalar_one()
                claim = conn.execute(sa.text(CLAIM_OF), {"id": first}).one()
        finally:
            slack.release()
        result = running.result(timeout=30)
    # Then no session was idle in a transaction and the row being sent was not row-locked
    assert in_transaction == []
    assert locked == first
    # But it was claimed (leased) by the deliverer, and was delivered once afterwards
    assert claim.claimed_until is not None and claim.leased
    assert result["delivered"] == 2 and slack.texts() == ["a", "b"]
    assert all(r.claimed_until is None for r in rows(clean_db))


IDLE_IN_TRANSACTION = """
SELECT pid FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid()
   AND state LIKE 'idle in transaction%'
"""
LOCK_NOWAIT = "SELECT id FROM notification_outbox WHERE id = :id FOR UPDATE NOWAIT"
CLAIM_OF = """
SELECT claimed_until, claimed_until > now() AS leased FROM notification_outbox WHERE id = :id
"""


def test_a_message_claimed_by_a_deliverer_that_died_waits_for_its_lease_then_goes_out(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender
) -> None:
    # Given a message leased by a deliverer that died mid-send, and one queued after it
    (claimed, _) = queue(clean_db, ("alertas", "reclamada"), ("alertas", "depois"))
    lease(clean_db, claimed, timedelta(minutes=1))
    # When a deliverer runs during the lease
    early = delivery.deliver_pending(clean_db, sender)
    # Then neither is sent (the later one never overtakes it)
    assert early["delivered"] == 0 and slack.calls == 0
    # When the lease has expired
    lease(clean_db, claimed, timedelta(seconds=-1))
    late = delivery.deliver_pending(clean_db, sender)
    # Then both go out, in order, once
    assert late["delivered"] == 2
    assert slack.texts() == ["reclamada", "depois"]


def lease(engine: sa.Engine, row_id: int, remaining: timedelta) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(outbox_table)
            .where(outbox_table.c.id == row_id)
            .values(claimed_until=sa.func.now() + remaining, claimed_by="dead-deliverer")
        )


def test_pruning_removes_delivered_messages_older_than_the_retention_only(
    clean_db: sa.Engine,
) -> None:
    # Given delivered messages 31 and 29 days old, one delivered now, and an old pending one
    ids = queue(clean_db, *[("operacoes", name) for name in ("31d", "29d", "agora", "pendente")])
    age(clean_db, ids[0], delivered=timedelta(days=31))
    age(clean_db, ids[1], delivered=timedelta(days=29))
    age(clean_db, ids[2], delivered=timedelta(0))
    age(clean_db, ids[3], created=timedelta(days=40))
    # When the outbox is pruned
    removed = delivery.prune_delivered(clean_db)
    # Then only the 31-day-old delivered message is gone
    assert removed == 1
    assert [r.texto for r in rows(clean_db)] == ["29d", "agora", "pendente"]


def test_the_deliverer_prunes_old_delivered_messages_at_most_once_per_period(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender
) -> None:
    # Given an old delivered message
    (old,) = queue(clean_db, ("operacoes", "velha"))
    age(clean_db, old, delivered=timedelta(days=45))
    # When the deliverer runs
    delivery.deliver_pending(clean_db, sender)
    # Then it pruned it
    assert rows(clean_db) == []
    # And a second old message waits for the next pruning period
    (older,) = queue(clean_db, ("operacoes", "outra velha"))
    age(clean_db, older, delivered=timedelta(days=45))
    delivery.deliver_pending(clean_db, sender)
    assert [r.texto for r in rows(clean_db)] == ["outra velha"]


def age(
    engine: sa.Engine,
    row_id: int,
    *,
    delivered: timedelta | None = None,
    created: timedelta | None = None,
) -> None:
    values: dict[str, object] = {}
    if delivered is not None:
        values.update(delivered_at=sa.func.now() - delivered, delivered_via="slack")
        values["created_at"] = sa.func.now() - delivered
    if created is not None:
        values["created_at"] = sa.func.now() - created
    with engine.begin() as conn:
        conn.execute(sa.update(outbox_table).where(outbox_table.c.id == row_id).values(**values))
