"""Slack refusing the token or a channel: messages stay pending, back off, and go out once fixed.

A real slack-sdk WebClient talks to FakeSlack (a local HTTP server) on the real database.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa

from orchestrator.adapters.slack import SlackSender
from orchestrator.services import delivery
from orchestrator.store import outbox
from orchestrator.store.schema import alert_state
from tests.support.fake_slack import FakeSlack
from tests.support.outbox_helpers import (
    TOKEN,
    make_due,
    queue,
    rows,
    seconds_until_next_attempt,
)

pytestmark = pytest.mark.db

LogCapture = pytest.LogCaptureFixture


def refusal_logs(caplog: LogCapture, code: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == delivery.logger.name and r.levelno >= logging.ERROR and code in r.getMessage()
    ]


def age_refusal_memo(engine: sa.Engine, by: timedelta) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(alert_state)
            .where(alert_state.c.key.like("slack_refused:%"))
            .values(last_sent_at=alert_state.c.last_sent_at - by)
        )


@pytest.mark.parametrize(
    "code",
    [
        "invalid_auth",
        "token_revoked",
        "not_authed",
        "account_inactive",
        "channel_not_found",
        "not_in_channel",
        "missing_scope",
    ],
)
def test_slack_refusing_us_keeps_every_message_pending_never_delivered_via_log(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender, code: str
) -> None:
    # Given five alerts queued while Slack answers with a refusal about our token or channel
    slack.refuse_with = code
    queue(clean_db, *[("alertas", f"alerta {n}") for n in range(5)])
    # When the deliverer runs three times, its back-off having passed each time
    results = []
    for _ in range(3):
        results.append(delivery.deliver_pending(clean_db, sender))
        make_due(clean_db)
    # Then all five are still pending, none was marked delivered via the log
    assert outbox.pending_count(clean_db) == 5
    assert [r.delivered_via for r in rows(clean_db)] == [None] * 5
    assert slack.messages == []
    # And each run stopped at the first refusal and said why
    assert slack.calls == 3
    assert [(r["status"], r["code"], r["delivered"]) for r in results] == [("refused", code, 0)] * 3
    assert rows(clean_db)[0].last_error_code == code


def test_the_refusal_is_logged_once_per_cooldown_not_once_per_run(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender, caplog: LogCapture
) -> None:
    # Given a revoked token and three queued alerts
    slack.refuse_with = "token_revoked"
    queue(clean_db, *[("alertas", f"a{n}") for n in range(3)])
    # When the deliverer runs four times within the cool-down
    for _ in range(4):
        delivery.deliver_pending(clean_db, sender)
        make_due(clean_db)
    # Then the cause was logged once, with what is waiting
    (logged,) = refusal_logs(caplog, "token_revoked")
    assert "3 pending" in logged.getMessage()
    # When the cool-down (pool_config.alert_cooldown_minutes, 30) has passed
    age_refusal_memo(clean_db, timedelta(minutes=31))
    delivery.deliver_pending(clean_db, sender)
    # Then it is logged once more
    assert len(refusal_logs(caplog, "token_revoked")) == 2
    assert TOKEN not in caplog.text


def test_refused_messages_are_delivered_exactly_once_in_order_once_slack_accepts_again(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender, caplog: LogCapture
) -> None:
    # Given eight messages of both canais queued while the token is revoked, tried twice
    slack.refuse_with = "token_revoked"
    texts = [f"mudança {n}" for n in range(8)]
    queue(clean_db, *[("alertas" if n % 2 else "operacoes", t) for n, t in enumerate(texts)])
    for _ in range(2):
        delivery.deliver_pending(clean_db, sender)
        make_due(clean_db)
    # When ops fix the token and the deliverer runs after the back-off
    slack.refuse_with = None
    result = delivery.deliver_pending(clean_db, sender)
    again = delivery.deliver_pending(clean_db, sender)
    # Then all eight reached Slack exactly once, in the order they were queued
    assert slack.texts() == texts
    assert (result["status"], result["delivered"], result["pending"]) == ("delivered", 8, 0)
    assert [r.delivered_via for r in rows(clean_db)] == ["slack"] * 8
    assert again["delivered"] == 0 and len(slack.messages) == 8
    # And the log says Slack accepts again
    assert any("accepts messages again" in r.getMessage() for r in caplog.records)


def test_a_refused_message_is_not_retried_before_its_next_attempt_and_the_wait_grows_capped(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender
) -> None:
    # Given a refused channel and two queued messages
    slack.refuse_with = "channel_not_found"
    queue(clean_db, ("alertas", "um"), ("alertas", "dois"))
    delivery.deliver_pending(clean_db, sender)
    first_wait = seconds_until_next_attempt(clean_db)
    # When the deliverer runs again before the back-off has passed
    again = delivery.deliver_pending(clean_db, sender)
    # Then Slack was not called again and nothing changed
    assert slack.calls == 1
    assert again["delivered"] == 0 and again["pending"] == 2
    assert all(5 < w <= delivery.RETRY_BASE.total_seconds() for w in first_wait)
    # When it keeps being refused, each time after the back-off
    waits = []
    for _ in range(8):
        make_due(clean_db)
        delivery.deliver_pending(clean_db, sender)
        waits.append(round(max(seconds_until_next_attempt(clean_db))))
    # Then the wait grows and stops at the cap
    assert waits[0] > first_wait[0]
    assert waits == sorted(waits)
    assert waits[-3:] == [delivery.RETRY_CAP.total_seconds()] * 3
    assert slack.calls == 9


def test_a_channel_refusal_holds_that_canal_only_and_keeps_its_order(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender
) -> None:
    # Given alertas and operacoes messages interleaved, and the alertas channel missing once
    queue(
        clean_db,
        ("alertas", "a1"),
        ("operacoes", "o1"),
        ("alertas", "a2"),
        ("operacoes", "o2"),
    )
    slack.fail_next_with = "channel_not_found"
    # When the deliverer runs
    result = delivery.deliver_pending(clean_db, sender)
    # Then operacoes went out, alertas wait (a2 behind a1, never before it)
    assert slack.texts() == ["o1", "o2"]
    assert (result["status"], result["code"], result["delivered"]) == (
        "refused",
        "channel_not_found",
        2,
    )
    assert [r.texto for r in rows(clean_db) if r.delivered_at is None] == ["a1", "a2"]
    # When the channel is back and the back-off has passed
    make_due(clean_db)
    delivery.deliver_pending(clean_db, sender)
    # Then alertas follow in order
    assert slack.texts() == ["o1", "o2", "a1", "a2"]


def test_a_message_queued_during_the_back_off_waits_behind_the_refused_ones(
    clean_db: sa.Engine, slack: FakeSlack, sender: SlackSender
) -> None:
    # Given a refused message in back-off
    slack.refuse_with = "not_in_channel"
    queue(clean_db, ("alertas", "velha"))
    delivery.deliver_pending(clean_db, sender)
    # When a new one is queued, the bot is invited back, and the deliverer runs before the back-off
    queue(clean_db, ("alertas", "nova"))
    slack.refuse_with = None
    early = delivery.deliver_pending(clean_db, sender)
    make_due(clean_db)
    delivery.deliver_pending(clean_db, sender)
    # Then the new one did not jump the queue
    assert early["delivered"] == 0
    assert slack.texts() == ["velha", "nova"]


@pytest.mark.parametrize("code", ["msg_too_long", "no_text", "invalid_blocks"])
def test_a_message_slack_refuses_for_its_own_content_goes_to_the_log_and_the_queue_moves_on(
    clean_db: sa.Engine,
    slack: FakeSlack,
    sender: SlackSender,
    caplog: LogCapture,
    code: str,
) -> None:
    # Given a message Slack will never take (its content), followed by a normal one
    queue(clean_db, ("alertas", "chip banido 5511"), ("alertas", "depois"))
    slack.fail_next_with = code
    # When the deliverer runs
    result = delivery.deliver_pending(clean_db, sender)
    # Then that one is in the log at ERROR, whole, and marked so; the next one reached Slack
    assert (result["delivered"], result["fallback"], result["pending"]) == (1, 1, 0)
    assert slack.calls == 2, "the refused message was tried once, not retried"
    (logged,) = refusal_logs(caplog, code)
    assert "chip banido 5511" in logged.getMessage()
    first, second = rows(clean_db)
    assert (first.delivered_via, second.delivered_via) == ("log", "slack")
    assert code in first.last_error
    assert slack.texts() == ["depois"]
