"""The cycle's read side: the pool status, one snapshot of the pool, the plan, the pool alerts."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

import sqlalchemy as sa

from orchestrator.domain import messages
from orchestrator.domain.pool import Plan, PoolConfig, Snapshot, plan_cycle
from orchestrator.domain.status import status_from
from orchestrator.errors import ConfigError
from orchestrator.services import backoff
from orchestrator.store import outbox
from orchestrator.store import repository as repo
from orchestrator.store.db import transaction

#: Stranded chips handed to migrate_conversations per cycle; the next cycle takes the rest.
MAX_STRANDED_PER_CYCLE = 500
#: Alert keys for pool-level alerts (cool-down per key).
CRITICAL_KEY, STORM_KEY, CONFIG_KEY = "pool:critico", "pool:storm", "pool:config"


def take_snapshot(conn: sa.Connection, *, salvy_configured: bool = True) -> tuple[Snapshot, float]:
    """The pool at one instant, from a few indexed queries, and the active chips' mean trust."""
    config = repo.load_config(conn)
    counts, trust = repo.count_by_status(conn)
    serving = repo.serving_candidates(conn, config)
    # The plan uses one ready chip per replacement, then fills the production deficit: fetch
    # only that many (a large pool holds thousands of ready chips it would never look at).
    deficit = max(0, min(config.producao_min, config.producao_max) - counts.active)
    snap = Snapshot(
        config=config,
        counts=counts,
        now=repo.db_now(conn),
        serving=serving,
        warming=repo.warming_candidates(conn, config),
        ready_ranked=repo.ready_ranked(conn, config, limit=len(serving) + deficit),
        cancellable=repo.cancellable_banned(conn) if config.auto_cancel_banned else (),
        stranded=repo.stranded_chip_ids(conn, limit=MAX_STRANDED_PER_CYCLE),
        purchase_gate=backoff.load(conn, salvy_configured=salvy_configured),
    )
    return snap, trust


def plan(engine: sa.Engine, *, salvy_configured: bool = True) -> tuple[Plan, dict, PoolConfig]:
    """What the next cycle would do (changes nothing), the status it saw, and the config."""
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        snap, trust = take_snapshot(conn, salvy_configured=salvy_configured)
    status = status_from(snap.config, snap.counts, trust, gate=snap.purchase_gate, now=snap.now)
    return plan_cycle(snap), status, snap.config


def raise_alerts(
    engine: sa.Engine, the_plan: Plan, status: dict, cooldown_minutes: int
) -> list[str]:
    """Queue the pool-level alerts that are due; returns the keys that fired."""
    cooldown = timedelta(minutes=cooldown_minutes)
    fired = []
    with transaction(engine) as conn:
        if the_plan.health == "critico" and outbox.alert_once(
            conn, CRITICAL_KEY, messages.pool_critical(status), cooldown=cooldown
        ):
            fired.append(CRITICAL_KEY)
        if the_plan.storm:
            held = len(the_plan.held_for_storm)
            text = messages.storm(held, status["producao"]["count"])
            if outbox.alert_once(conn, STORM_KEY, text, cooldown=cooldown):
                fired.append(STORM_KEY)
    return fired


def alert_invalid_config(engine: sa.Engine, error: ConfigError) -> bool:
    """Tell ops once per cool-down that the cycle refuses to plan."""
    with transaction(engine) as conn:
        return outbox.alert_once(
            conn, CONFIG_KEY, messages.invalid_config(str(error)), cooldown=timedelta(minutes=30)
        )


def plan_as_dict(the_plan: Plan) -> dict:
    """JSON-ready plan (for `chip-orchestrator plan --json` and task results)."""
    data = asdict(the_plan)
    data["replace"] = [{"chip_id": r.chip_id, "reason": r.reason} for r in the_plan.replace]
    return data


def pool_status(engine: sa.Engine, *, salvy_configured: bool = True) -> dict:
    """Counts per state against min/max/buffer, health, average trust, whether purchases run."""
    with engine.connect() as conn:
        config = repo.load_config(conn)
        counts, trust = repo.count_by_status(conn)
        gate = backoff.load(conn, salvy_configured=salvy_configured)
        now = repo.db_now(conn)
    return status_from(config, counts, trust, gate=gate, now=now)
