"""Test data: chips and conversations written straight to the real database."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from orchestrator.store.schema import chips, conversation_chips

_phones = itertools.count(1)


def phone() -> str:
    """A unique E.164 Brazilian mobile number."""
    return f"+55119{uuid.uuid4().int % 10**4:04d}{next(_phones) % 10**4:04d}"


def make_chip(
    engine: sa.Engine, status: str = "active", trust: float = 90, **values: object
) -> str:
    """Insert one chip; returns its id. Sensible timestamps for its status unless given."""
    now = datetime.now(UTC)
    row: dict[str, object] = {
        "telefone": phone(),
        "ddd": 11,
        "status": status,
        "trust_score": trust,
        "fase_warmup": "operacao",
        "warming_started_at": now - timedelta(days=30),
    }
    if status in ("ready", "active"):
        row["ready_at"] = now - timedelta(days=2)
    if status == "active":
        row["promoted_to_active_at"] = now - timedelta(days=1)
    row.update(values)
    with engine.begin() as conn:
        return conn.execute(sa.insert(chips).values(**row).returning(chips.c.id)).scalar_one()


def add_conversations(engine: sa.Engine, chip_id: str, n: int) -> list[str]:
    """Open n active conversations on a chip; returns their conversation ids."""
    ids = [f"conv-{uuid.uuid4().hex[:12]}" for _ in range(n)]
    if ids:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(conversation_chips),
                [{"conversation_id": c, "chip_id": chip_id, "active": True} for c in ids],
            )
    return ids


def chip_row(engine: sa.Engine, chip_id: str) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(sa.select(chips).where(chips.c.id == chip_id)).one()


def set_config(engine: sa.Engine, **values: object) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE pool_config SET " + ", ".join(f"{k} = :{k}" for k in values)), values
        )


def conversations_on(engine: sa.Engine, chip_id: str) -> int:
    """How many open conversations a chip holds."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(
                conversation_chips.c.chip_id == chip_id, conversation_chips.c.active
            )
        ).scalar_one()
