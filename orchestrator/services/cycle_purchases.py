"""The cycle's side of buying: how many numbers to buy now, decided and recorded under one lock.

The count of purchases in flight and the insert of new intents happen in one transaction that
holds an advisory lock, so two cycles that overlap (a lost cycle guard, a second deployment)
never buy more than the deficit between them, and a back-off recorded meanwhile is honoured.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

import sqlalchemy as sa

from orchestrator.domain.pool import purchases_to_make, reserve_target
from orchestrator.lock_keys import AdvisoryLock
from orchestrator.services import backoff
from orchestrator.services.intent import intent_name
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction
from orchestrator.store.schema import chips

#: pg_advisory_xact_lock key that serialises the purchase decisions (orchestrator/lock_keys.py).
PURCHASE_LOCK_KEY = int(AdvisoryLock.PURCHASES)


def record_intents(
    engine: sa.Engine,
    limit: int,
    deadline_minutes: int,
    *,
    salvy_configured: bool = True,
    warmup_buffer: int | None = None,
    ready_min: int | None = None,
    ready_left: int | None = None,
) -> list[str]:
    """Record the purchases the pool needs now (at most limit); returns their keys.

    warmup_buffer, ready_min: the targets the cycle planned with (auto_size may have raised
    them); the configured ones count when larger. ready_left: the fit ready chips the plan left
    after its swaps and promotions; the recount under the lock takes the smaller of that and
    the fit ready chips now, so a swap already done is not subtracted twice (which would buy).

    One transaction under an advisory lock: the count of purchases in flight and the insert
    are serialised with every other cycle, so overlapping cycles never buy more than the
    deficit, and a back-off recorded meanwhile is honoured.
    """
    with transaction(engine) as conn:
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(PURCHASE_LOCK_KEY)))
        config = repo.load_config(conn)
        if config.auto_size:
            config = replace(
                config,
                warmup_buffer=max(config.warmup_buffer, warmup_buffer or 0),
                ready_min=max(config.ready_min, ready_min or 0),
            )
        counts = repo.status_counts(conn)
        gate = backoff.load(conn, salvy_configured=salvy_configured)
        ready_fit = repo.count_fit_ready(conn, config, at_most=reserve_target(config))
        if ready_left is not None:
            ready_fit = min(ready_fit, ready_left)
        now = repo.db_now(conn)
        wanted = min(limit, purchases_to_make(config, counts, gate, now, ready_fit=ready_fit))
        keys = [str(uuid.uuid4()) for _ in range(max(0, wanted))]
        if keys:
            deadline = sa.func.now() + timedelta(minutes=deadline_minutes)
            conn.execute(
                sa.insert(chips).values(
                    [
                        {
                            "status": "provisioning",
                            "ddd": config.default_ddd,
                            "provisioning_name": intent_name(key),
                            "provisioning_deadline": deadline,
                            "trust_score": 0,
                        }
                        for key in keys
                    ]
                )
            )
        if salvy_configured:
            backoff.forget_no_salvy(conn)
    return keys


def drop_unsent(engine: sa.Engine, keys: Sequence[str]) -> int:
    """Forget intents whose task could not be sent and that no run has claimed (no purchase)."""
    if not keys:
        return 0
    with transaction(engine) as conn:
        result = conn.execute(
            sa.delete(chips).where(
                chips.c.provisioning_name.in_([intent_name(k) for k in keys]),
                chips.c.status == "provisioning",
                chips.c.provisioning_lease_owner.is_(None),
                chips.c.salvy_id.is_(None),
            )
        )
    return result.rowcount
