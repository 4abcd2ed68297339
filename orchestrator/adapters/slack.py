"""Senders of outbox messages: Slack (slack-sdk chat.postMessage) or, with no token, the log.

The Slack adapter translates slack-sdk's errors into ours: SlackUnavailable (a TransientError:
try again soon) or Rejected with Slack's own `error` code; `classify` says what a code means for
the messages waiting behind it.
"""

from __future__ import annotations

import logging
from http.client import HTTPException
from typing import Protocol
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    RetryHandler,
)

from orchestrator.errors import Rejected, TransientError

logger = logging.getLogger("orchestrator.notify")

#: Slack `error` codes that mean "try again later", as opposed to "this will not work as is".
TRANSIENT_SLACK_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
#: Codes saying our token or app is refused: every message would get the same answer.
TOKEN_REFUSALS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "missing_scope",
        "no_permission",
        "not_allowed_token_type",
        "access_denied",
        "team_access_not_granted",
        "ekm_access_denied",
        "org_login_required",
        "two_factor_setup_required",
        "enterprise_is_restricted",
    }
)
#: Codes about one message's own content: no retry can change Slack's answer.
CONTENT_REFUSALS = frozenset(
    {
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_attachments",
        "too_many_attachments",
        "invalid_metadata_format",
        "invalid_metadata_schema",
        "metadata_too_large",
    }
)
#: What a refusal holds back: every message (token), the messages of one canal, or none.
TOKEN, CHANNEL, CONTENT = "token", "channel", "content"
#: Seconds before slack-sdk gives up on one HTTP request.
SLACK_TIMEOUT = 10
#: Log level per canal when messages go to the log instead of Slack.
LOG_LEVELS = {"alertas": logging.WARNING, "operacoes": logging.INFO}
#: Longest error text kept (outbox.last_error, exception messages).
MAX_ERROR_LENGTH = 200


class SlackUnavailable(TransientError):
    """Raised when Slack may take the message later (HTTP 429/5xx, `ratelimited`, network)."""

    def __init__(self, reason: str, *, code: str, retry_after: float | None = None) -> None:
        super().__init__(reason, retry_after=retry_after)
        self.code = code


def classify(code: str) -> str:
    """What a refusal code holds back: TOKEN (everything), CONTENT (nothing) or CHANNEL.

    Anything not known to be about the message itself (channel_not_found, not_in_channel,
    is_archived, codes Slack adds later) holds only its canal: kept pending and reported,
    never quietly turned into a log line.
    """
    if code in TOKEN_REFUSALS:
        return TOKEN
    if code in CONTENT_REFUSALS:
        return CONTENT
    return CHANNEL


class Sender(Protocol):
    """Something that posts one message; `via` is what the outbox records."""

    via: str

    def send(self, canal: str, texto: str) -> None:
        """Post texto to canal; raise TransientError (retry) or Rejected (refused, with a code)."""


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
            reason = self._redact(f"slack unreachable: {_describe(error)}")
            raise SlackUnavailable(reason, code="unreachable") from None
        except SlackClientError as error:
            raise Rejected(self._redact(f"slack client: {error}"), code="slack_client") from None

    def _translate_api_error(self, error: SlackApiError) -> Rejected | SlackUnavailable:
        response = error.response
        data = response.data if isinstance(response.data, dict) else {}
        code = str(data.get("error") or f"http_{response.status_code}")
        status, retry_after = response.status_code, _retry_after(response.headers)
        if status == 429 or status >= 500:
            reason = f"slack answered HTTP {status}"
            return SlackUnavailable(reason, code=code, retry_after=retry_after)
        if code in TRANSIENT_SLACK_ERRORS:
            return SlackUnavailable(f"slack error: {code}", code=code, retry_after=retry_after)
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
