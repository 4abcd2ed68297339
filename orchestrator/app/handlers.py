"""What each Celery task does, wired to this process's engine, Redis and clients.

Tasks in tasks/ call exactly one of these. Each takes the chip's Redis lock (non-blocking: a
busy chip is "skipped", not awaited) around one lifecycle use case.
"""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.adapters import locks
from orchestrator.app import bootstrap
from orchestrator.app.settings import get_settings
from orchestrator.errors import ConfigError
from orchestrator.services import conversations, lifecycle
from orchestrator.services import delivery as notify
from orchestrator.services import dispatch as runner
from orchestrator.services import intent as provisioning
from orchestrator.store import repository as repo


def _locked(
    task: str,
    chip_id: object,
    action: Callable[[locks.LockSet], dict],
    owner: str | None = None,
) -> dict:
    chip_id = repo.parse_chip_id(chip_id)
    client = bootstrap.redis_client()
    locks.clear_queued(client, task, chip_id)
    with locks.LockSet(client, owner=owner) as held:
        if not held.acquire(chip_id):
            return {"status": "skipped", "chip_id": chip_id, "reason": "chip busy in another task"}
        return action(held)


def replace_chip(chip_id: object, reason: object = None, owner: str | None = None) -> dict:
    """orchestrator.replace_chip: lock the chip, and the ready chip it takes (owner: task id)."""
    return _locked(
        runner.REPLACE,
        chip_id,
        lambda held: lifecycle.replace_chip(
            bootstrap.engine(), chip_id, reason, claim=held.acquire
        ),
        owner,
    )


def promote_warming_to_ready(chip_id: object, owner: str | None = None) -> dict:
    """orchestrator.promote_warming_to_ready."""
    return _locked(
        runner.PROMOTE_READY,
        chip_id,
        lambda _: lifecycle.promote_warming_to_ready(bootstrap.engine(), chip_id),
        owner,
    )


def promote_ready_to_active(chip_id: object, owner: str | None = None) -> dict:
    """orchestrator.promote_ready_to_active."""
    return _locked(
        runner.PROMOTE_ACTIVE,
        chip_id,
        lambda _: lifecycle.promote_ready_to_active(bootstrap.engine(), chip_id),
        owner,
    )


def cancel_chip(chip_id: object, owner: str | None = None) -> dict:
    """orchestrator.cancel_chip: release the number at Salvy, then mark it cancelled."""
    return _locked(
        runner.CANCEL,
        chip_id,
        lambda _: provisioning.cancel(bootstrap.engine(), bootstrap.salvy_client(), chip_id),
        owner,
    )


def migrate_conversations(chip_id: object, owner: str | None = None) -> dict:
    """orchestrator.migrate_conversations: move what is left on a chip that no longer serves."""
    return _locked(
        runner.MIGRATE,
        chip_id,
        lambda _: conversations.migrate_conversations(bootstrap.engine(), chip_id),
        owner,
    )


def provision_chip(task_id: str, ddd: object = None) -> dict:
    """orchestrator.provision_chip: the purchase is keyed by the task id (stable on retry)."""
    settings = get_settings()
    return provisioning.provision(
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
    return provisioning.reconcile(bootstrap.engine(), salvy)


def deliver_notifications() -> dict:
    """orchestrator.deliver_notifications: post the outbox (Slack, or the log without a token).

    Answers "delivered", "refused" (Slack refuses our token or a channel: kept pending, with
    the code) or "busy" (another deliverer is at work).
    """
    return notify.deliver_pending(bootstrap.engine(), bootstrap.sender())


def run_cycle(send: runner.Send) -> dict:
    """orchestrator.run_cycle."""
    settings = get_settings()
    return runner.run_cycle(
        bootstrap.engine(),
        bootstrap.redis_client(),
        send,
        period_seconds=settings.cycle_seconds,
        deadline_minutes=settings.provisioning_deadline_minutes,
        salvy_configured=bool(settings.salvy_api_url),
    )
