"""Helpers for outbox tests on the real database: queue messages, read rows, move the clock."""

from __future__ import annotations

import sqlalchemy as sa

from orchestrator.app.settings import Settings
from orchestrator.store import outbox
from orchestrator.store.schema import outbox as outbox_table

#: The bot token the fake Slack accepts in these tests (never to be seen in a log).
TOKEN = "xoxb-1111-2222-NeverLogThisToken"
#: canal -> Slack channel the tests configure.
CHANNELS = {"alertas": "#alertas-test", "operacoes": "#operacoes-test"}


def settings_for(api_url: str | None, token: str | None = TOKEN) -> Settings:
    """Settings with a Slack token (or none) pointing at api_url."""
    return Settings(
        database_url=None,
        redis_url=None,
        broker_url=None,
        slack_bot_token=token,
        slack_channel_alertas=CHANNELS["alertas"],
        slack_channel_operacoes=CHANNELS["operacoes"],
        slack_api_url=api_url,
    )


def queue(engine: sa.Engine, *messages: tuple[str, str]) -> list[int]:
    """Each message in its own committed transaction, as separate state changes would."""
    ids = []
    for canal, texto in messages:
        with engine.begin() as conn:
            ids.append(outbox.enqueue(conn, canal, texto))
    return ids


def rows(engine: sa.Engine) -> list[sa.Row]:
    """Every outbox row, oldest first."""
    with engine.connect() as conn:
        return conn.execute(sa.select(outbox_table).order_by(outbox_table.c.id)).all()


def make_due(engine: sa.Engine) -> None:
    """Every pending message's back-off has passed (the clock moved on, not the test sleeping)."""
    with engine.begin() as conn:
        conn.execute(sa.text(MAKE_DUE))


def seconds_until_next_attempt(engine: sa.Engine) -> list[float]:
    """For each pending message, oldest first: seconds from now to its next attempt."""
    with engine.connect() as conn:
        return [float(s) for s in conn.execute(sa.text(UNTIL_NEXT)).scalars()]


MAKE_DUE = "UPDATE notification_outbox SET next_attempt_at = now() WHERE delivered_at IS NULL"
UNTIL_NEXT = """
SELECT extract(epoch FROM next_attempt_at - now()) FROM notification_outbox
 WHERE delivered_at IS NULL ORDER BY id
"""
