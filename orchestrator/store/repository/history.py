"""The history capacity planning reads: replacements per reason, returns to service, lead
times, warm-up losses.

Every read is a range of idx_orchestrator_ops_tipo (operacao, created_at DESC) or
idx_orchestrator_ops_time over the window, joined to chips by primary key: its cost follows
the operations in the window, not the size of the tables.

Every function takes the caller's Connection; the caller owns the transaction.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from orchestrator.domain.report import NO_REASON  # by_reason's key for a reason-less one
from orchestrator.store.schema import chips, operations

#: A banned serving chip that found no ready chip (services/replacement.py `_without_ready`):
#: the demotion when no active chip could take its conversations, else their migration. Unmet
#: demand. Not every "Chip banido..." motivo: a warming chip banned through the webhook wrote
#: "Chip banido (Evolution) em warming" (now "Banido pelo WhatsApp (Evolution) em warming"),
#: a warm-up loss that warmup_losses counts; such rows stay in the history.
UNSERVED_DEMOTION = "Chip banido (sem chip ready)"
UNSERVED_MIGRATION = "Chip banido sem chip ready%"
#: A ready chip banned through the webhook (services/signals.py `_banned`, either wording): a
#: ready chip consumed. A degraded chip banned is not (its replacement was counted).
READY_LOST_MOTIVO = "%(Evolution) em ready"
#: by_reason's keys for unmet demand and for ready chips lost.
UNSERVED, READY_LOST = "banned", "banned_while_ready"
#: Where a chip lost before ever being ready ends up.
LOST_STATUSES = ("banned", "degraded", "cancelled")


def history_start(conn: sa.Connection, since: datetime) -> datetime | None:
    """Where the history inside the window starts: `since` when operations go back further,
    else the oldest operation in the window (None: no history there)."""
    older = sa.select(operations.c.id).where(operations.c.created_at < since).limit(1)
    if conn.execute(older).first() is not None:
        return since
    stmt = sa.select(sa.func.min(operations.c.created_at)).where(operations.c.created_at >= since)
    return conn.execute(stmt).scalar_one()


def replacements_by_reason(conn: sa.Connection, since: datetime) -> dict[str, int]:
    """Ready chips consumed since `since`, by reason: the demand capacity planning serves.

    A successful auto_replace took one; a banned chip that found none (its conversations went
    to the least-loaded active chip, or nowhere) was demand that went unmet, counted too; a
    ready chip banned is one consumed. A number lost before it was ready is not demand.
    """
    op, motivo = operations.c.operacao, operations.c.motivo
    reason = sa.func.coalesce(operations.c.metadata["reason"].astext, NO_REASON)
    replaced = sa.and_(op == "auto_replace", operations.c.sucesso)
    unserved = sa.or_(
        sa.and_(op == "demotion", motivo == UNSERVED_DEMOTION),
        sa.and_(op == "migration", motivo.like(UNSERVED_MIGRATION)),
    )
    ready_lost = sa.and_(op == "demotion", motivo.like(READY_LOST_MOTIVO))
    key = sa.case(
        (replaced, reason), (ready_lost, sa.literal(READY_LOST)), else_=sa.literal(UNSERVED)
    ).label("reason")
    stmt = (
        sa.select(key, sa.func.count())
        .where(operations.c.created_at >= since, sa.or_(replaced, unserved, ready_lost))
        .group_by(key)
    )
    return {row[0]: int(row[1]) for row in conn.execute(stmt)}


def returns_to_service(conn: sa.Connection, since: datetime) -> int:
    """Degraded chips returned to ready since `since` (services/rehabilitation.py): each gives
    the ready tier back a chip a replacement consumed, so the cycle buys one number fewer."""
    stmt = sa.select(sa.func.count()).where(
        operations.c.operacao == "rehabilitation",
        operations.c.sucesso,
        operations.c.created_at >= since,
    )
    return int(conn.execute(stmt).scalar_one())


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
