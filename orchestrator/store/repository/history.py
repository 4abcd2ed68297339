"""The history capacity planning reads: replacements per reason, lead times, warm-up losses.

Every read is a range of idx_orchestrator_ops_tipo (operacao, created_at DESC) or
idx_orchestrator_ops_time over the window, joined to chips by primary key: its cost follows
the operations in the window, not the size of the tables.

Every function takes the caller's Connection; the caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from orchestrator.store.schema import chips, operations

#: A banned chip that found no ready chip (services/replacement.py `_without_ready`): unmet demand.
UNSERVED_MOTIVO = "Chip banido%"
#: Where a chip lost before ever being ready ends up.
LOST_STATUSES = ("banned", "degraded", "cancelled")
#: by_reason's key for a replacement asked for with no reason.
NO_REASON = "sem_motivo"


def history_start(conn: sa.Connection, since: datetime) -> datetime | None:
    """Where the history inside the window starts: `since` when operations go back further,
    else the oldest operation in the window (None: no history there)."""
    older = sa.select(operations.c.id).where(operations.c.created_at < since).limit(1)
    if conn.execute(older).first() is not None:
        return since
    stmt = sa.select(sa.func.min(operations.c.created_at)).where(operations.c.created_at >= since)
    return conn.execute(stmt).scalar_one()


def replacements_by_reason(conn: sa.Connection, since: datetime) -> dict[str, int]:
    """Serving chips that needed a ready chip since `since`, by reason.

    A successful auto_replace took one; a banned chip that found none (its conversations went
    to the least-loaded active chip, or nowhere) was demand that went unmet, counted too.
    """
    reason = sa.func.coalesce(operations.c.metadata["reason"].astext, NO_REASON)
    replaced = sa.and_(operations.c.operacao == "auto_replace", operations.c.sucesso)
    unserved = sa.and_(
        operations.c.operacao.in_(("migration", "demotion")),
        operations.c.motivo.like(UNSERVED_MOTIVO),
    )
    key = sa.case((replaced, reason), else_=sa.literal("banned")).label("reason")
    stmt = (
        sa.select(key, sa.func.count())
        .where(operations.c.created_at >= since, sa.or_(replaced, unserved))
        .group_by(key)
    )
    return {row[0]: int(row[1]) for row in conn.execute(stmt)}


def lead_time_days(conn: sa.Connection, since: datetime) -> tuple[float | None, int]:
    """Median days from purchase (the chip's row) to ready of chips promoted since `since`."""
    days = sa.extract("epoch", chips.c.ready_at - chips.c.created_at) / 86400.0
    stmt = (
        sa.select(sa.func.percentile_cont(0.5).within_group(days), sa.func.count())
        .select_from(operations.join(chips, chips.c.id == operations.c.chip_id))
        .where(
            operations.c.operacao == "promotion_warming_ready",
            operations.c.sucesso,
            operations.c.created_at >= since,
            chips.c.ready_at.is_not(None),
            chips.c.created_at.is_not(None),
        )
    )
    median, n = conn.execute(stmt).one()
    return (None if median is None else float(median)), int(n)


def warmup_losses(conn: sa.Connection, since: datetime, until: datetime) -> tuple[int, int]:
    """(bought, lost before ready) for numbers bought between since and until.

    until is now minus the lead time: those numbers had the time to become ready, so the share
    is not biased by purchases still warming.
    """
    lost = sa.and_(chips.c.ready_at.is_(None), chips.c.status.in_(LOST_STATUSES))
    stmt = (
        sa.select(sa.func.count(), sa.func.count().filter(lost))
        .select_from(operations.join(chips, chips.c.id == operations.c.chip_id))
        .where(
            operations.c.operacao == "auto_provision",
            operations.c.sucesso,
            operations.c.created_at >= since,
            operations.c.created_at < until,
        )
    )
    bought, lost_n = conn.execute(stmt).one()
    return int(bought), int(lost_n)
