"""Helpers of the purchase, reconcile and cancel tests: keys, rows, the outbox, an expired intent."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from orchestrator.store.schema import chips, operations, outbox


def key() -> str:
    """A fresh purchase key (what a task id is)."""
    return str(uuid.uuid4())


def rows(engine: sa.Engine, query: sa.Select) -> list[sa.Row]:
    """The rows of query."""
    with engine.connect() as conn:
        return list(conn.execute(query))


def provision_ops(engine: sa.Engine) -> list[sa.Row]:
    """Every auto_provision operation."""
    return rows(
        engine,
        sa.select(operations).where(operations.c.operacao == "auto_provision"),
    )


def messages_in(engine: sa.Engine, canal: str) -> list[str]:
    """The texts queued for canal, oldest first."""
    query = sa.select(outbox.c.texto).where(outbox.c.canal == canal).order_by(outbox.c.id)
    return [r.texto for r in rows(engine, query)]


def chips_in(engine: sa.Engine, status: str) -> list[sa.Row]:
    """Chips in status."""
    return rows(engine, sa.select(chips).where(chips.c.status == status))


def expire_intent(engine: sa.Engine, name: str) -> None:
    """Move the named intent's deadline into the past."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(chips)
            .where(chips.c.provisioning_name == name)
            .values(provisioning_deadline=sa.func.now() - sa.text("interval '1 minute'"))
        )
