"""Applying a provider (Salvy) event to its chip, after the account was re-read from Salvy.

Svix may deliver late, twice or out of order, so nothing here trusts the event's type alone: the
caller re-reads the account (adapters/salvy.py) and passes its current status. Each function is
one transaction, re-checks the chip under its row lock, and is a no-op the second time.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from orchestrator.domain import messages
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction

#: Chips replaced (conversations moved to a ready chip) before a Salvy block or cancel is applied.
REPLACE_FIRST = ("active",)


def find_chip(engine: sa.Engine, account_id: str) -> Mapping | None:
    """The chip whose salvy_id is this phone account, or None."""
    with engine.connect() as conn:
        return repo.chip_by_salvy_id(conn, account_id)


def blocked_idle(engine: sa.Engine, chip: Mapping, message_id: str) -> dict:
    """A blocked number that serves nothing: ops told once (per Svix message)."""
    with transaction(engine) as conn:
        told = outbox.alert_once(
            conn, f"salvy:blocked:{chip['id']}", messages.salvy_blocked_idle(chip), cooldown=None
        )
    return {"status": "alerted" if told else "ignored", "chip_id": str(chip["id"])}


def mark_cancelled(engine: sa.Engine, chip_id: str, account_id: str) -> dict:
    """Salvy cancelled a number we did not: the chip cancelled, the operation logged, ops alerted.

    Its open conversations are moved afterwards by migrate_conversations (the chip no longer
    serves); a chip already cancelled (by us, or by an earlier delivery) is left alone.
    """
    with transaction(engine) as conn:
        chip = repo.get_chip(conn, chip_id, lock=True)
        if chip["status"] == "cancelled":
            return {"status": "ignored", "reason": "already cancelled", "chip_id": chip_id}
        repo.transition(conn, chip_id, [chip["status"]], status="cancelled")
        waiting = repo.active_conversations(conn, chip_id)
        repo.record_operation(
            conn,
            "cancel",
            chip_id,
            "Cancelado na Salvy (nao solicitado)",
            metadata={"salvy_id": account_id, "status_anterior": chip["status"]},
        )
        outbox.enqueue(conn, "alertas", messages.salvy_canceled(chip, waiting))
    return {"status": "cancelled", "chip_id": chip_id, "conversas_abertas": waiting}


def notice(
    engine: sa.Engine, kind: str, chip: Mapping | None, account_id: str, message_id: str
) -> dict:
    """Unblocked or reactivated: ops told, once per Svix message (repeats share its id)."""
    with transaction(engine) as conn:
        told = outbox.alert_once(
            conn,
            f"salvy:{kind}:{account_id}:{message_id}",
            messages.salvy_notice(kind, chip, account_id),
            cooldown=None,
            canal="operacoes",
        )
    return {"status": "notified" if told else "ignored", "account_id": account_id}
