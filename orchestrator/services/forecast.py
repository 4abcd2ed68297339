"""Capacity planning's reads: measure the history, recommend the buffer, size the cycle.

`forecast` is what `chip-orchestrator forecast` prints; `measure` is what the cycle sizes the
pool from when auto_size is on (cached: `cached_measure`). The maths is domain/forecast.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from orchestrator.adapters import planning_cache
from orchestrator.domain import forecast as fc
from orchestrator.domain.pool import Counts, PoolConfig
from orchestrator.store import repository as repo

if TYPE_CHECKING:  # the client is used by the adapter; here it is only passed on
    import redis

#: measure(conn, config) -> History: how the cycle reads the history (cached or not).
Measure = Callable[[sa.Connection, PoolConfig], fc.History]


def measure(
    conn: sa.Connection, window_days: int = fc.DEFAULT_WINDOW_DAYS, warmup_days: int = 21
) -> fc.History:
    """The history inside the window: replacements, lead time, warm-up losses (indexed reads)."""
    now = repo.db_now(conn)
    since = now - timedelta(days=window_days)
    first = repo.history_start(conn, since)
    span = 0.0 if first is None else min(window_days, (now - first).total_seconds() / 86400)
    by_reason = repo.replacements_by_reason(conn, since)
    returned = repo.returns_to_service(conn, since)
    lead, samples = repo.lead_time_days(conn, since)
    mature = now - timedelta(days=lead if lead is not None else warmup_days)
    bought, lost = repo.warmup_losses(conn, since, mature)
    return fc.History(
        window_days=window_days,
        history_days=int(span),
        span_days=span,
        replacements=sum(by_reason.values()),
        by_reason=by_reason,
        returned=returned,
        lead_time_days=lead,
        lead_time_samples=samples,
        bought=bought,
        lost_in_warmup=lost,
    )


def measure_for(conn: sa.Connection, config: PoolConfig) -> fc.History:
    """The cycle's measurement, uncached (status and plan from the command line)."""
    return measure(conn, fc.DEFAULT_WINDOW_DAYS, config.warmup_days)


def cached_measure(client: redis.Redis) -> Measure:
    """The cycle's measurement, shared by the workers through Redis for a few minutes."""

    def read(conn: sa.Connection, config: PoolConfig) -> fc.History:
        key = f"{fc.DEFAULT_WINDOW_DAYS}d-{config.warmup_days}w"
        if (data := planning_cache.get(client, key)) is not None:
            return fc.History(**data)
        history = measure_for(conn, config)
        planning_cache.put(client, key, asdict(history))
        return history

    return read


def sizing(
    conn: sa.Connection, config: PoolConfig, read: Measure | None = None
) -> tuple[PoolConfig, fc.Recommendation | None]:
    """The config the cycle plans with: max(configured, recommended) when auto_size is on."""
    if not config.auto_size:
        return config, None
    rec = fc.recommend_from((read or measure_for)(conn, config), config)
    return fc.sized(config, rec), rec


def forecast(engine: sa.Engine, *, window_days: int, service_level: float | None = None) -> dict:
    """What `chip-orchestrator forecast --json` prints (keys as SPEC's "Capacity planning")."""
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        config = repo.load_config(conn)
        history = measure(conn, window_days, config.warmup_days)
    level = config.service_level if service_level is None else service_level
    return report(history, config, level)


def pool_now(
    engine: sa.Engine, window_days: int = fc.DEFAULT_WINDOW_DAYS
) -> tuple[PoolConfig, Counts, fc.History]:
    """The config, the chips per status and the history: where `simulate` starts from."""
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        config = repo.load_config(conn)
        return config, repo.status_counts(conn), measure(conn, window_days, config.warmup_days)


def report(history: fc.History, config: PoolConfig, level: float) -> dict:
    """The forecast as JSON-ready data; None wherever the history cannot say."""
    rate, demand, loss = history.rate, history.demand, history.loss_rate
    lead, assumed = fc.lead_time_or_assumed(history, config)
    rec = None if demand is None else fc.recommend(demand, lead, loss, level)
    risk = (
        None
        if demand is None
        else fc.p_no_ready(
            demand,
            lead,
            loss,
            config.warmup_buffer,
            config.ready_min,
            config.max_purchases_per_day,
        )
    )
    per_day = history.span_days or 1.0
    return {
        "window_days": history.window_days,
        "history_days": history.history_days,
        "replacements_per_day": None if rate is None else round(rate, 4),
        "by_reason": {}
        if rate is None
        else {k: round(v / per_day, 4) for k, v in sorted(history.by_reason.items())},
        "returned_per_day": None if rate is None else round(history.returned / per_day, 4),
        "demand_per_day": None if demand is None else round(demand, 4),
        "warmup_loss_rate": None if loss is None else round(loss, 4),
        "warmup_loss_flagged": fc.loss_flagged(loss),
        "warmup_loss_planned": None if rec is None else round(rec.planned_loss, 4),
        "lead_time_days": None
        if history.lead_time_days is None
        else round(history.lead_time_days, 2),
        "service_level": level,
        "recommended": {
            "warmup_buffer": None if rec is None else rec.warmup_buffer,
            "ready_min": None if rec is None else rec.ready_min,
        },
        "current": {
            "warmup_buffer": config.warmup_buffer,
            "ready_min": config.ready_min,
            "p_no_ready": None if risk is None else round(risk, 4),
        },
        "replacements": history.replacements,
        "lead_time_samples": history.lead_time_samples,
        "base_stock": None if rec is None else rec.base_stock,
        "reserve_target": {
            "current": config.ready_min + config.warmup_buffer,
            "recommended": None if rec is None else rec.target,
        },
        "mean_demand_over_lead_time": None if rec is None else round(rec.mean_demand, 3),
        "lead_time_used_days": None if rate is None else round(lead, 2),
        "auto_size": config.auto_size,
        "notes": _notes(history, rate, loss, lead, assumed),
    }


def _notes(
    history: fc.History, rate: float | None, loss: float | None, lead: float, assumed: bool
) -> list[str]:
    """Why something is None, assumed or bounded."""
    notes = []
    if not history.enough:
        notes.append(
            f"too little history: {history.history_days} day(s) of operations in the window,"
            f" {fc.MIN_HISTORY_DAYS} needed; nothing estimated"
        )
    elif assumed:
        notes.append(
            f"no chip became ready in the window: lead time assumed warmup_days ({lead:g})"
        )
    if rate is not None and loss is None:
        notes.append("no purchase old enough to have finished warming: warm-up loss taken as 0")
    if fc.loss_flagged(loss):
        notes.append(
            f"warm-up loss {loss:.0%} is too high to plan on: planned as {fc.LOSS_CAP:.0%};"
            f" {history.lost_in_warmup} of {history.bought} numbers lost before ready -"
            " find out why before buying more"
        )
    return notes
