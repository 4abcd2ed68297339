"""Reads for `report` and `history`: one month of orchestrator_operations, one chip's log.

The month's counts use idx_orchestrator_ops_tipo (operacao, created_at); a chip's log uses
idx_orchestrator_ops_chip (chip_id, created_at) and idx_orchestrator_ops_destino. Every
function takes the caller's Connection; none writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import sqlalchemy as sa

from orchestrator.domain.report import NO_REASON, MonthCounts
from orchestrator.store.repository.operations import NOT_PICKED_UP
from orchestrator.store.schema import chips, operations, pool_config

#: Operations the month's report counts.
COUNTED = ("auto_provision", "cancel", "auto_replace", "migration")
#: Operations whose metadata.conversas_migradas is conversations moved.
MOVING = ("auto_replace", "migration")

_meta = operations.c.metadata
#: metadata.conversas_migradas when it is a plain count (other services may write anything).
_MOVED = sa.case(
    (
        _meta["conversas_migradas"].astext.regexp_match(r"^[0-9]{1,9}$"),
        sa.cast(_meta["conversas_migradas"].astext, sa.Integer),
    ),
    else_=0,
)
#: Why a chip was replaced: the reason the task got, else "banned" for the seed's "Chip banido".
_REASON = sa.func.coalesce(
    sa.func.nullif(_meta["reason"].astext, ""),
    sa.case((operations.c.motivo == "Chip banido", "banned"), else_=NO_REASON),
)


def month_counts(conn: sa.Connection, start: datetime, end: datetime) -> MonthCounts:
    """Purchases, cancellations, replacements by reason, conversations moved in [start, end).

    An intent no worker took before its deadline (causa NOT_PICKED_UP) is not a failed purchase.
    """
    ok = operations.c.sucesso.is_not(False)
    reason = sa.case((operations.c.operacao == "auto_replace", _REASON), else_=None)
    stmt = (
        sa.select(
            operations.c.operacao,
            ok.label("ok"),
            reason.label("reason"),
            sa.func.count().label("n"),
            sa.func.coalesce(sa.func.sum(_MOVED), 0).label("moved"),
        )
        .where(
            operations.c.operacao.in_(COUNTED),
            operations.c.created_at >= start,
            operations.c.created_at < end,
            _meta["causa"].astext.is_distinct_from(NOT_PICKED_UP),  # never reached Salvy
        )
        .group_by(operations.c.operacao, ok, reason)
    )
    bought = failures = cancelled = moved = 0
    by_reason: dict[str, int] = {}
    for row in conn.execute(stmt).mappings():
        if row["operacao"] in MOVING and row["ok"]:
            moved += row["moved"]
        if row["operacao"] == "auto_provision":
            bought += row["n"] if row["ok"] else 0
            failures += 0 if row["ok"] else row["n"]
        elif row["operacao"] == "cancel" and row["ok"]:
            cancelled += row["n"]
        elif row["operacao"] == "auto_replace" and row["ok"]:
            by_reason[row["reason"]] = by_reason.get(row["reason"], 0) + row["n"]
    return MonthCounts(
        bought=bought,
        purchase_failures=failures,
        cancelled=cancelled,
        replaced_by_reason=by_reason,
        conversations_moved=moved,
        numbers_billed=numbers_billed(conn, start, end),
        banned_billed=banned_billed(conn, start, end),
    )


def numbers_billed(conn: sa.Connection, start: datetime, end: datetime) -> int:
    """Numbers held at any instant of [start, end) (the billing rule in domain/report.py).

    Three disjoint counts, so no cancelled chip needs a lookup of its own: numbers not
    cancelled; cancelled ones whose cancel operation is at or after start (a range of the
    (operacao, created_at) index); cancelled ones with no cancel operation at all (cancelled by
    another service) whose updated_at is at or after start.
    """
    held = sa.and_(chips.c.telefone.is_not(None), chips.c.created_at < end)
    cancel = sa.and_(operations.c.operacao == "cancel", operations.c.sucesso.is_not(False))
    not_cancelled = sa.select(sa.func.count()).where(held, chips.c.status != "cancelled")
    cancelled_since = (
        sa.select(sa.func.count(sa.distinct(chips.c.id)))
        .select_from(chips.join(operations, operations.c.chip_id == chips.c.id))
        .where(held, chips.c.status == "cancelled", cancel, operations.c.created_at >= start)
    )
    cancelled_by_others = sa.select(sa.func.count()).where(
        held,
        chips.c.status == "cancelled",
        chips.c.updated_at >= start,
        ~sa.exists().where(operations.c.chip_id == chips.c.id, cancel),
    )
    stmt = sa.select(
        not_cancelled.scalar_subquery()
        + cancelled_since.scalar_subquery()
        + cancelled_by_others.scalar_subquery()
    )
    return conn.execute(stmt).scalar_one()


def banned_billed(conn: sa.Connection, start: datetime, end: datetime) -> int:
    """Of the numbers billed for [start, end), those held banned at some instant of it.

    Banned since degraded_at (when the ban was handled; updated_at for one not handled yet):
    chips still banned, banned before end; and chips we cancelled at or after start whose
    cancel says they were banned then (Salvy reason whatsapp-ban, or status_anterior banned
    when Salvy cancelled it). A chip another service cancelled without an operation is not
    known to have been banned and is not counted.
    """
    since = sa.func.coalesce(chips.c.degraded_at, chips.c.updated_at)
    held = sa.and_(chips.c.telefone.is_not(None), chips.c.created_at < end, since < end)
    meta = operations.c.metadata
    was_banned = sa.or_(
        meta["salvy_reason"].astext == "whatsapp-ban", meta["status_anterior"].astext == "banned"
    )
    still = sa.select(sa.func.count()).where(held, chips.c.status == "banned")
    released = (
        sa.select(sa.func.count(sa.distinct(chips.c.id)))
        .select_from(chips.join(operations, operations.c.chip_id == chips.c.id))
        .where(
            held,
            chips.c.status == "cancelled",
            operations.c.operacao == "cancel",
            operations.c.sucesso.is_not(False),
            operations.c.created_at >= start,
            was_banned,
        )
    )
    return conn.execute(
        sa.select(still.scalar_subquery() + released.scalar_subquery())
    ).scalar_one()


def chip_operations(conn: sa.Connection, chip_id: str, limit: int) -> list[Mapping]:
    """The newest `limit` operations naming chip_id as origin or destination, newest first."""
    origin, target = chips.alias("o"), chips.alias("d")
    stmt = (
        sa.select(
            operations,
            origin.c.telefone.label("telefone_origem"),
            target.c.telefone.label("telefone_destino"),
        )
        .select_from(
            operations.outerjoin(origin, origin.c.id == operations.c.chip_id).outerjoin(
                target, target.c.id == operations.c.chip_destino_id
            )
        )
        .where(sa.or_(operations.c.chip_id == chip_id, operations.c.chip_destino_id == chip_id))
        .order_by(operations.c.created_at.desc(), operations.c.id)
        .limit(limit)
    )
    return list(conn.execute(stmt).mappings())


def monthly_cost(conn: sa.Connection) -> float | None:
    """pool_config.number_monthly_cost (BRL); None when unset or when there is no row."""
    value = conn.execute(sa.select(pool_config.c.number_monthly_cost)).scalar()
    return None if value is None else float(value)
