"""`chip-orchestrator chips`: chips by status (lifecycle order), DDD and phone, a page at a time.

One statement per status, in order, until the page is full: each an ordered range of
idx_chips_status_ddd_telefone (status, ddd, telefone) cut at what the page still needs, with or
without a DDD, so a page costs its own rows whatever the pool holds; open conversations are
counted for the listed chips only (idx_conversation_chips_chip_active).

Every function takes the caller's Connection; the caller owns the transaction (one snapshot:
REPEATABLE READ, so a chip changing status meanwhile is listed once).
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
    page: list[Mapping] = []
    for status in statuses:
        if len(page) >= limit:
            break
        page += conn.execute(status_page(status, ddd, limit - len(page))).mappings()
    return page


def status_page(status: str, ddd: int | None, limit: int) -> sa.Select:
    """The first `limit` chips of one status (and DDD), with their open conversations."""
    open_conversations = (
        sa.select(sa.func.count())
        .where(conversation_chips.c.chip_id == chips.c.id, conversation_chips.c.active)
        .scalar_subquery()
    )
    where = [chips.c.status == status]
    if ddd is not None:
        where.append(chips.c.ddd == ddd)
    return (
        sa.select(*LISTED, open_conversations.label("open_conversations"))
        .where(*where)
        .order_by(chips.c.ddd, chips.c.telefone, chips.c.id)
        .limit(limit)
    )
