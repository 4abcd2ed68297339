"""Reconciling purchases with Salvy: intents past their deadline settled, late buys adopted.

Runs every 5 minutes (orchestrator.reconcile_provisioning). An intent a live run still holds
(its lease) is left to that run; a number bought for an intent that already failed is adopted
all the same (it is paid for). What Salvy holds that we have no chip for is reported, never
cancelled (services/unknown_numbers.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from orchestrator.adapters.salvy import SalvyClient
from orchestrator.services.intent import NAME_PREFIX, complete, fail
from orchestrator.services.intent_expiry import expire_unclaimed, never_claimed
from orchestrator.services.unknown_numbers import report_unknown
from orchestrator.store.schema import chips, operations


def reconcile(engine: sa.Engine, salvy: SalvyClient) -> dict:
    """Settle intents past their deadline against Salvy; report numbers we have no chip for.

    An intent a live run still holds (its lease) is left to that run. One no run ever claimed
    is not a failed purchase (services/intent_expiry.py), unless Salvy lists its name.
    """
    lease_free = sa.or_(
        chips.c.provisioning_lease_until.is_(None),
        chips.c.provisioning_lease_until < sa.func.now(),
    )
    with engine.connect() as conn:
        stuck = list(
            conn.execute(
                sa.select(chips).where(
                    chips.c.status == "provisioning",
                    chips.c.provisioning_deadline < sa.func.now(),
                    lease_free,
                )
            ).mappings()
        )
    numbers = salvy.list_numbers()
    by_name = {n.name: n for n in numbers if n.name and n.status != "canceled"}
    adopted = failed = expired = 0
    for intent in stuck:
        number = by_name.get(intent["provisioning_name"])
        if number is not None:
            adopted += _settled_now(complete(engine, intent, number, intent["ddd"]))
        elif never_claimed(intent):  # no run took it: the I/O worker, not Salvy
            expired += expire_unclaimed(engine, intent) is not None
        else:
            failed += _settled_now(
                fail(engine, intent, "compra nao concluida no prazo", code="expired")
            )
    late = _failed_intents_named(engine, list(by_name)) + _dropped_intents_named(engine, by_name)
    for intent in late:
        number = by_name[intent["provisioning_name"]]
        adopted += _settled_now(complete(engine, intent, number, intent["ddd"]))
    unknown = report_unknown(engine, numbers)
    return {
        "status": "reconciled",
        "adopted": adopted,
        "failed": failed,
        "expired_unclaimed": expired,
        "unknown": unknown,
    }


def _settled_now(outcome: dict) -> bool:
    """True when this call settled the intent (not a concurrent task before it)."""
    return not outcome.get("already")


def _failed_intents_named(engine: sa.Engine, names: Sequence[str]) -> list[Mapping]:
    """Failed intents (cancelled, never given a number) whose name Salvy does hold: late buys."""
    if not names:
        return []
    query = sa.select(chips).where(
        chips.c.status == "cancelled",
        chips.c.salvy_id.is_(None),
        chips.c.provisioning_name.in_(names),
    )
    with engine.connect() as conn:
        return list(conn.execute(query).mappings())


def _dropped_intents_named(engine: sa.Engine, names: Sequence[str]) -> list[Mapping]:
    """Failed intents whose row was dropped but whose name Salvy holds after all: late buys.

    Rebuilt from their failed auto_provision operation (name, DDD, the intent's id).
    """
    ours = [n for n in names if n.startswith(NAME_PREFIX)]
    if not ours:
        return []
    with engine.connect() as conn:
        held = set(
            conn.execute(
                sa.select(chips.c.provisioning_name).where(chips.c.provisioning_name.in_(ours))
            ).scalars()
        )
        orphans = [n for n in ours if n not in held]
        if not orphans:
            return []
        metadata = conn.execute(
            sa.select(operations.c.metadata).where(
                operations.c.operacao == "auto_provision",
                operations.c.sucesso.is_(False),
                operations.c.metadata["name"].astext.in_(orphans),
            )
        ).scalars()
        found = {
            m["name"]: {
                "id": m.get("intencao"),
                "provisioning_name": m["name"],
                "ddd": m.get("ddd"),
            }
            for m in metadata
        }
    return list(found.values())
