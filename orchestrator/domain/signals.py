"""What a gateway (Evolution API) or provider (Salvy) event means for a chip. Pure.

Envelopes in, plain signals out: the receiver parses, services/signals.py applies. Shapes follow
Evolution API v2 (whatsapp.baileys.service.ts connectionUpdate(), webhook.controller.ts) and
Salvy's Svix deliveries (SPEC "Webhooks").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

#: What a gateway event does to its chip.
CONNECTED, DISCONNECTED, BANNED, ALERT = "connected", "disconnected", "banned", "alert"
#: Baileys' close codes: forbidden / permanent ban (banned, replace now).
BAN_CODES = frozenset({403, 406})
#: Close codes that leave the chip disconnected and tell ops once.
ALERT_CODES = {401: "logged_out", 402: "temporary_ban"}
#: Evolution's events we act on (dotted, lower case, as in the envelope's `event`).
CONNECTION_UPDATE, LOGOUT_INSTANCE, STATUS_INSTANCE = (
    "connection.update",
    "logout.instance",
    "status.instance",
)
#: Salvy's event types we act on.
SALVY_BLOCKED, SALVY_CANCELED = "phone-account.blocked", "phone-account.canceled"
SALVY_UNBLOCKED, SALVY_REACTIVATED = "phone-account.unblocked", "phone-account.reactivated"
SALVY_TYPES = (SALVY_BLOCKED, SALVY_CANCELED, SALVY_UNBLOCKED, SALVY_REACTIVATED)
#: A `date_time` further than this from our clock is no wall clock (time zones span -12..+14 h):
#: the event is taken as carrying none (domain/event_clock.py orders it by its arrival).
MAX_CLOCK_SKEW = timedelta(hours=26)


class BadEnvelope(ValueError):
    """Raised when a webhook body is not the documented shape (answered 422, nothing changed)."""


@dataclass(frozen=True)
class GatewaySignal:
    """One Evolution event, understood: which chip (instance), what happened, when."""

    event: str
    instance: str
    kind: str
    code: int | None = None
    #: The envelope's date_time on the SENDER's clock (maybe hours off ours), or None.
    at: datetime | None = None

    @property
    def alert(self) -> str | None:
        """Why ops are told once (logged_out, temporary_ban), or None."""
        if self.kind != ALERT:
            return None
        return ALERT_CODES.get(self.code or 0, "logged_out")


def event_name(raw: str) -> str:
    """CONNECTION_UPDATE, connection-update, connection.update -> connection.update."""
    return raw.strip().lower().replace("_", ".").replace("-", ".")


def close_kind(code: int | None) -> str:
    """A close (or refusal) with Baileys' status code: banned, alert, or plain disconnected."""
    if code in BAN_CODES:
        return BANNED
    if code in ALERT_CODES:
        return ALERT
    return DISCONNECTED


def _code(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)  # Evolution sends numbers; a string of digits is tolerated
    except (TypeError, ValueError, OverflowError):  # 1e999 parses as inf: no code, a refusal
        raise BadEnvelope(f"status code {str(value)[:20]!r} is not a number") from None


def _when(value: object, now: datetime) -> datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadEnvelope("date_time must be an ISO 8601 string")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise BadEnvelope(f"date_time {value[:40]!r} is not ISO 8601") from None
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    # Only ever compared with the same gateway's other date_times (domain/event_clock.py).
    return at if abs(at - now) <= MAX_CLOCK_SKEW else None


def _text(value: object, what: str) -> str:
    """A non-empty string PostgreSQL can hold (a NUL byte would fail the query: a refusal, not
    an outage that the sender would retry)."""
    if not isinstance(value, str) or not value.strip():
        raise BadEnvelope(f"no {what}")
    if "\x00" in value:
        raise BadEnvelope(f"{what} contains a NUL character")
    return value.strip()


def _kind(event: str, data: Mapping) -> tuple[str | None, int | None]:
    if event == LOGOUT_INSTANCE:
        return ALERT, 401
    if event == CONNECTION_UPDATE:
        state, code = data.get("state"), _code(data.get("statusReason"))
        if state == "open":
            return CONNECTED, code
        if state in ("close", "refused"):
            return close_kind(code), code
        return None, code  # connecting: nothing to do yet
    if event == STATUS_INSTANCE and data.get("status") == "closed":
        code = _code(data.get("disconnectionReasonCode"))
        return close_kind(code), code
    return None, None


def gateway_signal(body: object, path_event: str | None, now: datetime) -> GatewaySignal | str:
    """The signal in an Evolution envelope, or why it is ignored (a short reason string).

    BadEnvelope when the body is not an envelope at all. The body's `event` wins over the
    "webhook by events" path suffix; either may name it.
    """
    if not isinstance(body, Mapping):
        raise BadEnvelope("the body must be a JSON object (Evolution's envelope)")
    raw = body.get("event") or path_event
    if not isinstance(raw, str) or not raw.strip():
        raise BadEnvelope("no event: expected {'event', 'instance', 'data', ...}")
    instance, data = _text(body.get("instance"), "instance name"), body.get("data")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise BadEnvelope("data must be an object")
    event, at = event_name(raw), _when(body.get("date_time"), now)
    kind, code = _kind(event, data)
    if kind is None:
        return f"event {event} with no action"
    return GatewaySignal(event, instance, kind, code, at)


@dataclass(frozen=True)
class ProviderSignal:
    """One Salvy event: its type and phone account, and Svix's message id (repeats share it)."""

    type: str
    account_id: str
    message_id: str


def provider_signal(body: object, message_id: str) -> ProviderSignal | str:
    """The signal in a Salvy delivery (already verified), or why it is ignored."""
    if not isinstance(body, Mapping):
        raise BadEnvelope("the body must be a JSON object {'type', 'timestamp', 'data'}")
    kind, data = body.get("type"), body.get("data")
    if not isinstance(kind, str) or not isinstance(data, Mapping):
        raise BadEnvelope("expected {'type': str, 'data': {'phoneAccountId': ...}}")
    if kind not in SALVY_TYPES:
        return f"type {kind[:60]} with no action"
    account = _text(data.get("phoneAccountId"), "data.phoneAccountId")
    return ProviderSignal(kind, account, message_id)


def is_flapping(drops: int, flap_max_per_hour: int) -> bool:
    """flap_max_per_hour drops or more within the hour (0: never)."""
    return flap_max_per_hour > 0 and drops >= flap_max_per_hour
