"""What each Celery task does, wired to this process's engine, Redis and clients.

Tasks in tasks/ call exactly one of these. Each per-chip one takes the chip's Redis lock
(non-blocking: a busy chip is "skipped", not awaited) around one use case. The task base class
also counts deliveries (poison messages) and queues failure alerts through here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from orchestrator import task_names as names
from orchestrator.adapters import locks
from orchestrator.app import bootstrap
from orchestrator.app.settings import get_settings
from orchestrator.errors import ConfigError, Poisoned
from orchestrator.services import (
    cancel,
    conversations,
    delivery,
    dispatch,
    promote,
    purchase,
    reconcile,
    replacement,
)
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction

#: Deliveries of one message before it is declared poison (a crash each time is not retried).
MAX_DELIVERIES = 5
#: One failure alert per task name per cool-down.
FAILURE_ALERT_COOLDOWN = timedelta(minutes=30)


def with_chip_lock(
    task: str,
    chip_id: object,
    action: Callable[[locks.LockSet], dict],
    owner: str | None = None,
    retries: int | None = None,
) -> dict:
    """Run action holding the chip's Redis lock; "skipped" when another task holds it.

    owner: the task id (a redelivery takes over the lock its dead run left). With retries
    too, this delivery is counted in the call that takes the lock (one round trip for both),
    and past MAX_DELIVERIES it raises Poisoned instead of running.
    """
    chip_id = repo.parse_chip_id(chip_id)
    delivery = None if owner is None or retries is None else (owner, retries)
    with locks.LockSet(bootstrap.redis_client(), owner=owner) as held:
        # The queued marker goes in the same round trip: the next cycle may queue the chip again.
        taken = held.acquire(chip_id, clear=locks.queued_key(task, chip_id), delivery=delivery)
        if held.deliveries is not None and held.deliveries > MAX_DELIVERIES:
            raise Poisoned(held.deliveries)
        if not taken:
            return {"status": "skipped", "chip_id": chip_id, "reason": "chip busy in another task"}
        return action(held)


def replace_chip(
    chip_id: object, reason: object = None, owner: str | None = None, retries: int | None = None
) -> dict:
    """orchestrator.replace_chip: lock the chip, and the ready chip it takes (owner: task id)."""
    return with_chip_lock(
        names.REPLACE,
        chip_id,
        lambda held: replacement.replace_chip(
            bootstrap.engine(), chip_id, reason, claim=held.acquire, task_id=owner
        ),
        owner,
        retries,
    )


def promote_warming_to_ready(
    chip_id: object, owner: str | None = None, retries: int | None = None
) -> dict:
    """orchestrator.promote_warming_to_ready."""
    return with_chip_lock(
        names.PROMOTE_READY,
        chip_id,
        lambda _: promote.promote_warming_to_ready(bootstrap.engine(), chip_id),
        owner,
        retries,
    )


def promote_ready_to_active(
    chip_id: object, owner: str | None = None, retries: int | None = None
) -> dict:
    """orchestrator.promote_ready_to_active."""
    return with_chip_lock(
        names.PROMOTE_ACTIVE,
        chip_id,
        lambda _: promote.promote_ready_to_active(bootstrap.engine(), chip_id),
        owner,
        retries,
    )


def cancel_chip(chip_id: object, owner: str | None = None, retries: int | None = None) -> dict:
    """orchestrator.cancel_chip: release the number at Salvy, then mark it cancelled."""
    return with_chip_lock(
        names.CANCEL,
        chip_id,
        lambda _: cancel.cancel(bootstrap.engine(), bootstrap.salvy_client(), chip_id),
        owner,
        retries,
    )


def migrate_conversations(
    chip_id: object, owner: str | None = None, retries: int | None = None
) -> dict:
    """orchestrator.migrate_conversations: move what is left on a chip that no longer serves."""
    return with_chip_lock(
        names.MIGRATE,
        chip_id,
        lambda _: conversations.migrate_conversations(bootstrap.engine(), chip_id),
        owner,
        retries,
    )


def provision_chip(task_id: str, ddd: object = None) -> dict:
    """orchestrator.provision_chip: the purchase is keyed by the task id (stable on retry)."""
    settings = get_settings()
    return purchase.provision(
        bootstrap.engine(),
        bootstrap.salvy_client(),
        task_id,
        ddd=ddd,
        fallback=settings.ddd_fallback,
        deadline_minutes=settings.provisioning_deadline_minutes,
        settle_seconds=settings.purchase_settle_seconds,
    )


def reconcile_provisioning() -> dict:
    """orchestrator.reconcile_provisioning: settle stuck purchases, report unknown numbers."""
    salvy = bootstrap.salvy_client()
    if salvy is None:
        raise ConfigError("SALVY_API_URL is not set: nothing to reconcile against")
    return reconcile.reconcile(bootstrap.engine(), salvy)


def deliver_notifications() -> dict:
    """orchestrator.deliver_notifications: post the outbox (Slack, or the log without a token).

    Answers "delivered", "refused" (Slack refuses our token or a channel: kept pending, with
    the code) or "busy" (another deliverer is at work).
    """
    return delivery.deliver_pending(bootstrap.engine(), bootstrap.sender())


def run_cycle(send: dispatch.Send) -> dict:
    """orchestrator.run_cycle."""
    settings = get_settings()
    return dispatch.run_cycle(
        bootstrap.engine(),
        bootstrap.redis_client(),
        send,
        period_seconds=settings.cycle_seconds,
        deadline_minutes=settings.provisioning_deadline_minutes,
        salvy_configured=bool(settings.salvy_api_url),
    )


def count_delivery(task_id: str, retries: int) -> int | None:
    """How many times this message (task id, retry number) was delivered; None if Redis is down."""
    return locks.count_delivery(bootstrap.redis_client(), task_id, retries)


def alert_task_failure(task_name: str, texto: str) -> bool:
    """Queue a failure alert for ops, once per task name per cool-down; True if queued."""
    with transaction(bootstrap.engine()) as conn:
        return outbox.alert_once(
            conn, f"task_failed:{task_name}", f":x: {texto}", cooldown=FAILURE_ALERT_COOLDOWN
        )
