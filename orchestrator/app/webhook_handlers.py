"""What the webhook receiver's worker task does: a Salvy event, re-read from Salvy, applied.

The receiver answers Salvy at once and enqueues orchestrator.salvy_event; the re-read (an HTTP
call that may take seconds) happens here, in the I/O worker, never in the HTTP request. The
chip's Redis lock is held throughout: cancel_chip holds it while it cancels at Salvy and commits,
so Salvy's `canceled` for our own cancel is seen after our commit, as ours.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from orchestrator.adapters import locks
from orchestrator.app import bootstrap
from orchestrator.domain import signals
from orchestrator.errors import ConfigError, Rejected, TransientError
from orchestrator.services import conversations, provider_events, replacement

#: Seconds before retrying when another task holds the chip.
BUSY_RETRY_SECONDS = 1.0


def salvy_event(kind: str, account_id: str, message_id: str, owner: str | None = None) -> dict:
    """orchestrator.salvy_event: blocked -> replace (salvy_blocked); canceled -> cancelled; else tell ops."""
    if kind not in signals.SALVY_TYPES or not isinstance(account_id, str) or not account_id:
        raise Rejected(f"not a Salvy event this task handles: {str(kind)[:60]!r}", code="malformed")
    engine = bootstrap.engine()
    chip = provider_events.find_chip(engine, account_id)
    if kind in (signals.SALVY_UNBLOCKED, signals.SALVY_REACTIVATED):
        return provider_events.notice(engine, kind, chip, account_id, message_id)
    if chip is None:
        return {"status": "ignored", "reason": "no chip has this phone account"}
    chip_id = str(chip["id"])
    with locks.LockSet(bootstrap.redis_client(), owner=owner) as held:
        if not held.acquire(chip_id):
            raise TransientError("chip busy in another task", retry_after=BUSY_RETRY_SECONDS)
        status = _salvy_status(account_id)
        chip = provider_events.find_chip(engine, account_id) or chip
        if kind == signals.SALVY_BLOCKED:
            return _blocked(engine, chip, status, message_id, held)
        return _canceled(engine, chip, status, account_id, held)


def _salvy_status(account_id: str) -> str:
    salvy = bootstrap.salvy_client()
    if salvy is None:
        raise ConfigError("SALVY_API_URL is not set: cannot re-read a Salvy account")
    return salvy.get(account_id).status


def _blocked(
    engine: sa.Engine, chip: Mapping, status: str, message_id: str, held: locks.LockSet
) -> dict:
    if status != "blocked":  # unblocked since, or a late delivery: Salvy's word now wins
        return {"status": "skipped", "reason": f"account is {status} at Salvy"}
    if chip["status"] in provider_events.REPLACE_FIRST or (
        chip["status"] == "banned" and chip["degraded_at"] is None
    ):
        return replacement.replace_chip(engine, chip["id"], "salvy_blocked", claim=held.acquire)
    return provider_events.blocked_idle(engine, chip, message_id)


def _canceled(
    engine: sa.Engine, chip: Mapping, status: str, account_id: str, held: locks.LockSet
) -> dict:
    if status != "canceled":
        return {"status": "skipped", "reason": f"account is {status} at Salvy"}
    if chip["status"] == "cancelled":
        return {"status": "ignored", "reason": "already cancelled", "chip_id": str(chip["id"])}
    replaced = None
    if chip["status"] in provider_events.REPLACE_FIRST:
        replaced = replacement.replace_chip(
            engine, chip["id"], "salvy_canceled", claim=held.acquire
        )
    result = provider_events.mark_cancelled(engine, str(chip["id"]), account_id)
    moved = conversations.migrate_conversations(engine, chip["id"])
    return {**result, "replacement": replaced, "migration": moved.get("status")}
