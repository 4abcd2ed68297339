"""Deliver the notification outbox to Slack (slack-sdk chat.postMessage) or, with no token, the log.

Each message is claimed in its own transaction (`FOR UPDATE SKIP LOCKED`, oldest first), sent,
and marked delivered in that same transaction, so two concurrent deliverers never post the same
row. Delivery is at-least-once. A message is posted twice only when Slack accepted it and we
could not record that: a crash (or a lost database connection) between the send and the commit,
or Slack's answer lost after it received the request (read timeout, connection reset), which the
next run sends again. A failed send leaves the row pending and stops the batch (TransientError,
the task retries with backoff). A message Slack refuses for good (channel_not_found,
invalid_auth...) is written to the log at ERROR and marked delivered via 'log', so it neither
blocks the queue nor disappears.
"""

from __future__ import annotations

import logging
from http.client import HTTPException
from typing import Protocol
from urllib.error import URLError

import sqlalchemy as sa
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    RetryHandler,
)

from orchestrator.db import transaction
from orchestrator.errors import Rejected, TransientError
from orchestrator.schema import outbox
from orchestrator.settings import Settings

logger = logging.getLogger(__name__)

#: Slack `error` codes that mean "try again later", as opposed to "this will never work".
TRANSIENT_SLACK_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
#: Seconds before slack-sdk gives up on one HTTP request.
SLACK_TIMEOUT = 10
#: Log level per canal when messages go to the log instead of Slack.
LOG_LEVELS = {"alertas": logging.WARNING, "operacoes": logging.INFO}
#: Longest last_error stored in the outbox.
MAX_ERROR_LENGTH = 200


class Sender(Protocol):
    """Something that posts one message; `via` is what the outbox records."""

    via: str

    def send(self, canal: str, texto: str) -> None:
        """Post texto to canal; raise TransientError (retry) or Rejected (never will work)."""


class LogSender:
    """Writes messages to the `orchestrator.notify` log (no Slack token configured)."""

    via = "log"

    def send(self, canal: str, texto: str) -> None:
        """Log texto at WARNING for alertas, INFO for operacoes."""
        logger.log(LOG_LEVELS.get(canal, logging.WARNING), "[%s] %s", canal, texto)


class SlackSender:
    """Posts messages with slack-sdk's WebClient; translates its errors into ours."""

    via = "slack"

    def __init__(self, token: str, channels: dict[str, str], base_url: str | None = None) -> None:
        if not token:
            raise ValueError("SlackSender needs a bot token (SLACK_BOT_TOKEN)")
        self._token = token
        self._channels = dict(channels)
        self._client = WebClient(
            token=token,
            base_url=base_url or WebClient.BASE_URL,
            timeout=SLACK_TIMEOUT,
            retry_handlers=_retry_handlers(),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackSender:
        """A sender for the configured token, channels and (optional) API URL."""
        channels = {
            "alertas": settings.slack_channel_alertas,
            "operacoes": settings.slack_channel_operacoes,
        }
        return cls(settings.slack_bot_token or "", channels, settings.slack_api_url)

    def __repr__(self) -> str:
        return f"SlackSender(base_url={self._client.base_url!r}, channels={self._channels!r})"

    def send(self, canal: str, texto: str) -> None:
        """Post texto (Slack mrkdwn) to the channel mapped to canal."""
        channel = self._channels.get(canal)
        if channel is None:
            raise Rejected(f"no Slack channel for canal {canal!r}", code="unknown_canal")
        try:
            self._client.chat_postMessage(channel=channel, text=texto, mrkdwn=True)
        except SlackApiError as error:
            raise self._translate_api_error(error) from None
        except (OSError, HTTPException) as error:  # URLError, timeouts, resets
            raise TransientError(self._redact(f"slack unreachable: {_describe(error)}")) from None
        except SlackClientError as error:
            raise Rejected(self._redact(f"slack client: {error}"), code="slack_client") from None

    def _translate_api_error(self, error: SlackApiError) -> Rejected | TransientError:
        response = error.response
        data = response.data if isinstance(response.data, dict) else {}
        code = str(data.get("error") or f"http_{response.status_code}")
        status, retry_after = response.status_code, _retry_after(response.headers)
        if status == 429 or status >= 500:
            return TransientError(f"slack answered HTTP {status}", retry_after=retry_after)
        if code in TRANSIENT_SLACK_ERRORS:
            return TransientError(f"slack error: {code}", retry_after=retry_after)
        return Rejected(self._redact(f"slack refused the message: {code}"), code=code)

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***")[:MAX_ERROR_LENGTH]


def _retry_handlers() -> list[RetryHandler]:
    # 429 is safe to retry: Slack did not post. Only URLError (failure while connecting or
    # sending) is retried among connection errors; a reset after the request went out may
    # mean Slack posted it, so that one goes back to the outbox's own retry instead.
    return [
        RateLimitErrorRetryHandler(max_retry_count=2),
        ConnectionErrorRetryHandler(max_retry_count=1, error_types=[URLError]),
    ]


def _describe(error: BaseException) -> str:
    reason = getattr(error, "reason", None) or error
    return f"{type(error).__name__}: {reason}"


def _retry_after(headers: dict) -> float | None:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return float(raw)
            except (TypeError, ValueError):
                return None
    return None


def build_sender(settings: Settings) -> SlackSender | LogSender:
    """Slack when a bot token is configured, the log otherwise."""
    return SlackSender.from_settings(settings) if settings.slack_bot_token else LogSender()


def deliver_pending(engine: sa.Engine, sender: Sender, *, limit: int = 100) -> dict[str, int]:
    """Deliver up to `limit` pending messages, oldest first; TransientError stops the batch."""
    counts = {"delivered": 0, "fallback": 0}
    for _ in range(limit):
        outcome = _deliver_next(engine, sender)
        if outcome is None:
            break
        counts[outcome] += 1
    return {**counts, "pending": pending_count(engine)}


def _deliver_next(engine: sa.Engine, sender: Sender) -> str | None:
    """Claim, send and mark one message in one transaction; None when nothing is claimable."""
    with transaction(engine) as conn:
        row = _claim_oldest(conn)
        if row is None:
            return None
        try:
            sender.send(row.canal, row.texto)
        except TransientError as error:
            # Recorded and committed with the claim (a second transaction would wait on our own
            # row lock); the row stays pending for the task's retry.
            _record_failure(conn, row.id, error.reason)
            failure = error
        except Rejected as error:
            logger.error(
                "outbox %s refused by %s (%s); delivered to this log instead: [%s] %s",
                row.id, sender.via, error.reason, row.canal, row.texto,
            )  # fmt: skip
            _mark_delivered(conn, row.id, "log", error.reason)
            return "fallback"
        else:
            _mark_delivered(conn, row.id, sender.via)
            return "delivered"
    logger.warning("outbox %s not delivered, will retry: %s", row.id, failure.reason)
    raise failure


def _claim_oldest(conn: sa.Connection) -> sa.Row | None:
    query = (
        sa.select(outbox.c.id, outbox.c.canal, outbox.c.texto)
        .where(outbox.c.delivered_at.is_(None))
        .order_by(outbox.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return conn.execute(query).first()


def _mark_delivered(conn: sa.Connection, row_id: int, via: str, error: str | None = None) -> None:
    conn.execute(
        sa.update(outbox)
        .where(outbox.c.id == row_id)
        .values(
            delivered_at=sa.func.now(),
            delivered_via=via,
            attempts=outbox.c.attempts + 1,
            last_error=error[:MAX_ERROR_LENGTH] if error else outbox.c.last_error,
        )
    )


def _record_failure(conn: sa.Connection, row_id: int, error: str) -> None:
    conn.execute(
        sa.update(outbox)
        .where(outbox.c.id == row_id)
        .values(attempts=outbox.c.attempts + 1, last_error=error[:MAX_ERROR_LENGTH])
    )


def pending_count(engine: sa.Engine) -> int:
    """How many messages wait for delivery."""
    query = sa.select(sa.func.count()).select_from(outbox).where(outbox.c.delivered_at.is_(None))
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def oldest_pending_age_seconds(engine: sa.Engine) -> float | None:
    """Age of the oldest undelivered message in seconds; None when nothing is pending."""
    age = sa.func.extract("epoch", sa.func.now() - sa.func.min(outbox.c.created_at))
    query = sa.select(age).where(outbox.c.delivered_at.is_(None))
    with engine.connect() as conn:
        value = conn.execute(query).scalar_one()
    return None if value is None else float(value)
