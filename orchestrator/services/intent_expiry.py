"""Purchase intents that expired before any run took them: the I/O worker was down, not Salvy.

A run claims its intent (the lease) before it calls Salvy. An intent past its deadline that no
run ever claimed (no lease owner, no number) never reached Salvy: its expiry says the
provisioning queue was not consumed (the I/O worker down or stuck), nothing about Salvy. So it
is dropped and logged with a reason of its own, ops are told once per cool-down that purchases
are not being picked up, and the purchase back-off and its "purchases paused" alert never hear
of it. Its operation row keeps the name, as a failure's does: a late delivery of its task does
not buy (intent.ensure_intent), and reconcile still adopts a number found under that name.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

from orchestrator.domain import messages
from orchestrator.services import backoff
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction
from orchestrator.store.repository.operations import NOT_PICKED_UP
from orchestrator.store.schema import chips

#: alert_state key of "purchases are not being picked up" (one alert per cool-down).
ALERT_KEY = "purchase:not_picked_up"
#: The operation's motivo and erro: what happened, not a purchase failure.
MOTIVO = "Compra nao iniciada"
ERRO = (
    "intencao expirou sem que nenhum worker a retirasse da fila provisioning"
    " (worker de I/O parado ou atrasado); a Salvy nao foi chamada"
)


def never_claimed(intent: Mapping) -> bool:
    """No run ever took the intent's lease, so nothing about it was ever asked of Salvy."""
    return intent["provisioning_lease_owner"] is None and intent["salvy_id"] is None


def expire_unclaimed(engine: sa.Engine, intent: Mapping) -> dict | None:
    """Drop an intent past its deadline that no run ever claimed; log it and alert once.

    None when it is no longer such an intent (a run claimed it meanwhile, or it was settled):
    re-checked under the row lock, so a run's claim and this drop never both happen.
    """
    with transaction(engine) as conn:
        row = (
            conn.execute(
                sa.select(chips)
                .where(
                    chips.c.id == intent["id"],
                    chips.c.status == "provisioning",
                    chips.c.provisioning_lease_owner.is_(None),
                    chips.c.salvy_id.is_(None),
                    chips.c.provisioning_deadline < sa.func.now(),
                )
                .with_for_update()
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        conn.execute(sa.delete(chips).where(chips.c.id == row["id"]))
        repo.record_operation(
            conn,
            "auto_provision",
            None,
            MOTIVO,
            metadata={
                "ddd": row["ddd"],
                "name": row["provisioning_name"],
                "causa": NOT_PICKED_UP,
                "intencao": row["id"],
                "prazo": row["provisioning_deadline"].isoformat(),
            },
            sucesso=False,
            erro=ERRO,
        )
        text = messages.purchases_not_picked_up(row["provisioning_name"])
        outbox.alert_once(conn, ALERT_KEY, text, cooldown=backoff.alert_cooldown(conn))
    return {"status": "expired", "chip_id": row["id"], "reason": ERRO, "cause": NOT_PICKED_UP}
