"""`chip-orchestrator chips`: chips by status (lifecycle order), DDD and phone, a page at a time.

One statement: per status, an ordered range of idx_chips_status_ddd_telefone (status, ddd,
telefone) cut at the page size, so a page costs its own rows whatever the pool holds; open
conversations are counted for the listed chips only (idx_conversation_chips_chip_active).

Every function takes the caller's Connection; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from orchestrator.store.schema import chips, conversation_chips

#: The columns of a listed chip, in the order shown.
LISTED = (
    chips.c.id,
    chips.c.telefone,
    chips.c.status,
    chips.c.trust_score,
    chips.c.evolution_connected,
    chips.c.ddd,
    chips.c.instance_name,
)


def list_chips(
    conn: sa.Connection, statuses: Sequence[str], ddd: int | None, limit: int
) -> list[Mapping]:
    """Up to `limit` chips in these statuses (in the order given), then by DDD and phone, each
    with its open conversations."""
    return list(conn.execute(list_query(statuses, ddd, limit)).mappings())


def list_query(statuses: Sequence[str], ddd: int | None, limit: int) -> sa.Select:
    """The statement behind list_chips (benchmarks EXPLAIN it)."""
    branches = []
    for rank, status in enumerate(statuses):
        where = [chips.c.status == status]
        if ddd is not None:
            where.append(chips.c.ddd == ddd)
        branches.append(
            sa.select(sa.literal(rank).label("rank"), *LISTED)
            .where(*where)
            .order_by(chips.c.ddd, chips.c.telefone, chips.c.id)
            .limit(limit)
        )
    page = sa.union_all(*branches).subquery("page")
    open_conversations = (
        sa.select(sa.func.count())
        .where(conversation_chips.c.chip_id == page.c.id, conversation_chips.c.active)
        .scalar_subquery()
    )
    return (
        sa.select(*(page.c[c.name] for c in LISTED), open_conversations.label("open_conversations"))
        .order_by(page.c.rank, page.c.ddd, page.c.telefone, page.c.id)
        .limit(limit)
    )
