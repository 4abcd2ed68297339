"""The chips a decision may pick: degraded/banned to replace, warming to promote, fit ready ones.

Every function takes the caller's Connection; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from orchestrator.domain.pool import ChipView, PoolConfig
from orchestrator.store.repository.chips import VIEW_COLUMNS
from orchestrator.store.schema import (
    chips,
    conversation_chips,
)


def serving_candidates(conn: sa.Connection, config: PoolConfig) -> list[ChipView]:
    """Active chips with low trust or disconnected, and banned chips not yet handled."""
    active = sa.and_(
        chips.c.status == "active",
        sa.or_(
            chips.c.trust_score < config.trust_degraded_threshold,
            sa.not_(chips.c.evolution_connected),
        ),
    )
    banned = sa.and_(chips.c.status == "banned", chips.c.degraded_at.is_(None))
    rows = conn.execute(sa.select(*VIEW_COLUMNS).where(sa.or_(active, banned))).mappings()
    return [ChipView(**row) for row in rows]


def warming_candidates(conn: sa.Connection, config: PoolConfig) -> list[ChipView]:
    """Warming chips in phase 'operacao' with enough trust, warmed >= warmup_days (pool.py rechecks).

    The days are whole 24-hour days before the transaction's now(), as pool.warmed_days counts
    them (hours, not calendar days, so a DST change in the session's time zone cannot shift it).
    """
    warmed_before = sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 24 * config.warmup_days)
    stmt = sa.select(*VIEW_COLUMNS).where(
        chips.c.status == "warming",
        chips.c.fase_warmup == "operacao",
        chips.c.trust_score >= config.trust_min_for_ready,
        chips.c.warming_started_at <= warmed_before,
    )
    return [ChipView(**row) for row in conn.execute(stmt).mappings()]


def ready_ranked(conn: sa.Connection, config: PoolConfig, limit: int) -> list[ChipView]:
    """Ready chips fit to serve, best first (highest trust, then longest ready): replace's order."""
    stmt = (
        sa.select(*VIEW_COLUMNS)
        .where(*fit_ready_clauses(config))
        .order_by(chips.c.trust_score.desc(), chips.c.ready_at)
        .limit(limit)
    )
    return [ChipView(**row) for row in conn.execute(stmt).mappings()]


def cancellable_banned(conn: sa.Connection, limit: int = 100) -> list[str]:
    """Banned chips already replaced, still holding a number."""
    stmt = (
        sa.select(chips.c.id)
        .where(chips.c.status == "banned", chips.c.degraded_at.is_not(None))
        .limit(limit)
    )
    return list(conn.execute(stmt).scalars())


def best_ready(conn: sa.Connection, config: PoolConfig, exclude: Sequence[str]) -> Mapping | None:
    """Lock the best ready chip fit to serve that nobody else holds (FOR UPDATE SKIP LOCKED)."""
    stmt = (
        sa.select(chips)
        .where(*fit_ready_clauses(config), chips.c.id.not_in(exclude))
        .order_by(chips.c.trust_score.desc(), chips.c.ready_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return conn.execute(stmt).mappings().first()


#: Healthy active chips whose load least_loaded_healthy_active compares: the most trusted ones.
LEAST_LOADED_SAMPLE = 100


def _healthy_active(config: PoolConfig) -> tuple[sa.ColumnElement[bool], ...]:
    """Active, connected, trust at or above the replacement threshold (lock_if_serving's test)."""
    return (
        chips.c.status == "active",
        chips.c.evolution_connected,
        chips.c.trust_score >= config.trust_degraded_threshold,
    )


def least_loaded_healthy_active(
    conn: sa.Connection, config: PoolConfig, exclude: str
) -> Mapping | None:
    """Lock the least loaded of the LEAST_LOADED_SAMPLE most trusted healthy active chips.

    Exact while the pool has at most that many healthy active chips. Above it, the cost stays
    that many index probes however large the pool (idx_chips_active_trust gives the sample,
    idx_conversation_chips_chip_active each load) instead of counting every active chip's
    conversations; the conversations still go to a trusted chip that holds few, which is what a
    fallback needs. Ties: higher trust, then the lower id (the same chip every time).
    """
    healthy = _healthy_active(config)
    sample = (
        sa.select(chips.c.id)
        .where(*healthy, chips.c.id != exclude)
        .order_by(chips.c.trust_score.desc(), chips.c.id)
        .limit(LEAST_LOADED_SAMPLE)
        .subquery("sample")
    )
    cc = conversation_chips
    load = (
        sa.select(sa.func.count()).where(cc.c.chip_id == sample.c.id, cc.c.active).scalar_subquery()
    )
    stmt = (
        sa.select(chips)
        .join(sample, sample.c.id == chips.c.id)
        # Repeated on the locked row: a chip changed since the sample was read is re-checked.
        .where(*healthy)
        .order_by(load, chips.c.trust_score.desc(), chips.c.id)
        .limit(1)
        .with_for_update(of=chips, skip_locked=True)
    )
    return conn.execute(stmt).mappings().first()


def fit_ready_clauses(config: PoolConfig | None) -> tuple[sa.ColumnElement[bool], ...]:
    """SQL twin of pool.is_fit_to_serve for ready chips (idx_chips_ready_fit serves it).

    A chip once degraded is never taken again (degraded_at IS NULL), as replace always did.
    config None: the trust threshold is the bind parameter `trust_min` (a statement built once).
    """
    trust_min = (
        sa.bindparam("trust_min", type_=sa.Float) if config is None else config.trust_min_for_ready
    )
    return (
        chips.c.status == "ready",
        chips.c.evolution_connected,
        chips.c.degraded_at.is_(None),
        chips.c.trust_score >= trust_min,
    )


def fit_ready_exists(conn: sa.Connection, config: PoolConfig, exclude: Sequence[str]) -> bool:
    """Whether a fit ready chip exists, locked by others or not (a plain read never waits)."""
    stmt = sa.select(sa.exists().where(*fit_ready_clauses(config), chips.c.id.not_in(exclude)))
    return bool(conn.execute(stmt).scalar_one())
