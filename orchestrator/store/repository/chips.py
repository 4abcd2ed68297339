"""One chip row: parse its id, read or lock it, find it by phone, compare-and-set its status.

Every function takes the caller's Connection; the caller owns the transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa

from orchestrator.domain.pool import PoolConfig
from orchestrator.errors import Rejected
from orchestrator.store.schema import (
    chips,
)

#: Columns a ChipView needs.
VIEW_COLUMNS = (
    chips.c.id,
    chips.c.status,
    chips.c.trust_score,
    chips.c.evolution_connected,
    chips.c.evolution_disconnected_at,
    chips.c.fase_warmup,
    chips.c.warming_started_at,
    chips.c.degraded_at,
)


def parse_chip_id(value: object) -> str:
    """A canonical UUID string, or Rejected for anything else."""
    if not isinstance(value, str):
        raise Rejected(
            f"chip id must be a UUID string, got {type(value).__name__}", code="malformed"
        )
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Rejected(f"malformed chip id {value[:64]!r}", code="malformed") from None


#: One chip row by id, read and locked. Built once: a statement built per call costs more Python
#: than its round trip (SQLAlchemy still caches the compiled form either way).
_GET_CHIP = sa.select(chips).where(chips.c.id == sa.bindparam("chip_id"))
_LOCK_CHIP = _GET_CHIP.with_for_update()


def get_chip(conn: sa.Connection, chip_id: str, *, lock: bool = False) -> Mapping:
    """One chip row (FOR UPDATE when lock), or Rejected if unknown."""
    stmt = _LOCK_CHIP if lock else _GET_CHIP
    row = conn.execute(stmt, {"chip_id": chip_id}).mappings().first()
    if row is None:
        raise Rejected(f"unknown chip {chip_id}", code="unknown_chip")
    return row


def find_chip_id(conn: sa.Connection, ref: str) -> str:
    """Resolve a chip id or a phone number (digits, with or without +55) to a chip id."""
    try:
        return parse_chip_id(ref)
    except Rejected:
        pass
    digits = "".join(ch for ch in ref if ch.isdigit())
    if len(digits) < 10:
        raise Rejected(f"{ref[:64]!r} is neither a chip id nor a phone number", code="malformed")
    candidates = {digits, "55" + digits}
    stmt = sa.select(chips.c.id).where(
        sa.func.regexp_replace(chips.c.telefone, r"\D", "", "g").in_(candidates)
    )
    found = list(conn.execute(stmt).scalars())
    if len(found) != 1:
        raise Rejected(f"no single chip with phone number {ref[:32]}", code="unknown_chip")
    return found[0]


def transition(
    conn: sa.Connection, chip_id: str, expected: Sequence[str], **values: object
) -> Mapping | None:
    """Compare-and-set: UPDATE chips .. WHERE id = :id AND status IN :expected RETURNING *."""
    stmt = (
        sa.update(chips)
        .where(chips.c.id == chip_id, chips.c.status.in_(expected))
        .values(**values, updated_at=sa.func.now())
        .returning(chips)
    )
    return conn.execute(stmt).mappings().first()


def lock_if_serving(conn: sa.Connection, config: PoolConfig, chip_id: str) -> Mapping | None:
    """Share-lock chip_id if it is active, connected and trusted; None otherwise.

    FOR SHARE keeps a replacement of that chip from committing until we do; a chip replaced
    while we waited is re-checked on its new row version and comes back None.
    """
    stmt = (
        sa.select(chips)
        .where(
            chips.c.id == chip_id,
            chips.c.status == "active",
            chips.c.evolution_connected,
            chips.c.trust_score >= config.trust_degraded_threshold,
        )
        .with_for_update(read=True)
    )
    return conn.execute(stmt).mappings().first()


def db_now(conn: sa.Connection) -> datetime:
    """The database's clock (transaction start): one clock for every comparison."""
    return conn.execute(sa.select(sa.func.now())).scalar_one()
