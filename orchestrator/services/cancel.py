"""Cancelling: a degraded or banned number released at Salvy, then the chip marked cancelled.

A cancelled number is billed for its whole month, so only the cycle (auto_cancel_banned, near
the month's end: domain/release.py) or ops (`chip-orchestrator cancel`) ask for it, never while
the chip holds open conversations, and never for a banned number Salvy brought back.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from orchestrator.adapters.salvy import SalvyClient
from orchestrator.domain import messages, release
from orchestrator.errors import ConfigError, Rejected
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction

#: Salvy's cancel reasons (DELETE body).
BAN_REASON, DEFAULT_CANCEL_REASON = "whatsapp-ban", "unnecessary"
#: Chip statuses whose number may be released.
CANCELLABLE = ("degraded", "banned")
#: The replacement reason of a chip taken out of service because Salvy blocked its line.
SALVY_BLOCKED = "salvy_blocked"


def cancel(engine: sa.Engine, salvy: SalvyClient | None, chip_id: object) -> dict:
    """Release a degraded or banned number at Salvy, then mark the chip cancelled.

    Refused while the chip holds open conversations (they are moved first): checked before the
    call to Salvy, and again under the row lock, which also holds back routers' INSERTs. A banned
    number is re-read at Salvy first and kept (`skipped`, ops told once) when Salvy brought it
    back: being activated again, reactivated after a cancel, unblocked after its block.
    """
    chip_id = repo.parse_chip_id(chip_id)
    with engine.connect() as conn:
        chip = repo.get_chip(conn, chip_id)
        waiting = repo.active_conversations(conn, chip_id)
        blocked = chip["status"] == "banned" and repo.replaced_for(conn, chip_id, SALVY_BLOCKED)
    if chip["status"] not in CANCELLABLE:
        raise Rejected(
            f"chip {chip_id} is {chip['status']}; only degraded or banned chips are cancelled",
            code="wrong_state",
        )
    _refuse_open_conversations(chip_id, waiting, released=False)
    salvy_reason = BAN_REASON if chip["status"] == "banned" else DEFAULT_CANCEL_REASON
    if chip["salvy_id"]:
        if salvy is None:
            raise ConfigError("SALVY_API_URL is not set: cannot cancel a Salvy number")
        if chip["status"] == "banned" and (why := _kept_at_salvy(salvy, chip, blocked)):
            return _keep(engine, chip, why)
        salvy.cancel(chip["salvy_id"], salvy_reason)
    with transaction(engine) as conn:
        repo.get_chip(conn, chip_id, lock=True)
        _refuse_open_conversations(
            chip_id, repo.active_conversations(conn, chip_id), released=bool(chip["salvy_id"])
        )
        # Released at Salvy already: a chip turned banned meanwhile, or returned to ready by the
        # cycle (rehabilitation) while the number was being released, is still cancelled here.
        expected = (*CANCELLABLE, "ready") if chip["salvy_id"] else CANCELLABLE
        if repo.transition(conn, chip_id, expected, status="cancelled") is None:
            raise Rejected(f"chip {chip_id} changed state while cancelling", code="conflict")
        repo.record_operation(
            conn,
            "cancel",
            chip_id,
            f"Cancelado na Salvy ({salvy_reason})",
            metadata={"salvy_id": chip["salvy_id"], "salvy_reason": salvy_reason},
        )
        outbox.enqueue(conn, "operacoes", messages.cancelled(chip, salvy_reason))
    return {"status": "cancelled", "chip_id": chip_id, "salvy_reason": salvy_reason}


def _kept_at_salvy(salvy: SalvyClient, chip: Mapping, blocked: bool) -> str | None:
    """Re-read the account at Salvy: why this banned number is in service again, or None."""
    account = salvy.find(chip["salvy_id"])
    if account is None:  # unknown to Salvy: the DELETE counts it as done
        return None
    return release.kept_at_salvy(account.status, account.canceled_at, blocked)


def _keep(engine: sa.Engine, chip: Mapping, why: str) -> dict:
    """Leave a number Salvy brought back as it is; ops told once per chip."""
    with transaction(engine) as conn:
        outbox.alert_once(
            conn,
            f"release_kept:{chip['id']}",
            messages.release_kept(chip, why),
            cooldown=None,
            canal="operacoes",
        )
    return {"status": "skipped", "chip_id": str(chip["id"]), "reason": f"kept_at_salvy: {why}"}


def _refuse_open_conversations(chip_id: str, waiting: int, *, released: bool) -> None:
    """Rejected (has_conversations) while the chip holds open conversations."""
    if not waiting:
        return
    # Salvy counts a second cancel as done, so sending cancel_chip again once the cycle has
    # moved them finishes the job.
    after = (
        "; its number is already released at Salvy: send cancel_chip again then" if released else ""
    )
    raise Rejected(
        f"chip {chip_id} holds {waiting} open conversation(s); they are moved first{after}",
        code="has_conversations",
    )
