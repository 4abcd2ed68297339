"""Helpers of the purchase, reconcile and cancel tests: keys, rows, the outbox, an expired intent,
an intent a run claimed and gave up on."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from orchestrator.services.intent import claim, set_lease
from orchestrator.store.schema import chips, operations, outbox, purchase_backoff


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


def claimed_and_given_up(engine: sa.Engine, intent_id: str) -> None:
    """A run claimed the intent (so it went on to call Salvy), then gave up: lease released."""
    owner = f"run-{uuid.uuid4().hex[:8]}"
    assert claim(engine, intent_id, owner) is not None
    set_lease(engine, intent_id, owner, 0)


def backoff_rows(engine: sa.Engine) -> list[sa.Row]:
    """The purchase back-off state (no row: purchases were never paused)."""
    return rows(engine, sa.select(purchase_backoff))
