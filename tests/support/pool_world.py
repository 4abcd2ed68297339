"""The pool's world for the stateful property test (tests/services/test_pool_properties.py).

What other services do to the tables, as the plain SQL they send (autocommitted, no orchestrator
code), and what the test observes before and after each use case: the true counts from `chips`,
the cached ones, every chip's status, the operation rows.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from orchestrator.ops import checker
from tests.factories import add_conversations, make_chip, set_config

#: Checker kinds that a use case must never leave behind, whatever other services did.
#: (active_above_max and the conversation checks are asserted per step, as the use case's own
#: doing: a bulk load by another service may take the pool past producao_max by itself.)
USE_CASE_KINDS = {"promoted_twice", "replaced_twice", "missing_operation", "bought_twice"}

#: Pool sizes the machine starts from: a small pool, and one where swaps of banned chips may
#: take a growth slot (producao_max far above the active count) instead of the exact count.
CONFIGS = {
    "small": {"producao_min": 3, "producao_max": 4, "ready_min": 1},
    "roomy": {"producao_min": 34, "producao_max": 40, "ready_min": 1},
}


#: Phone numbers of the chips of one run, in creation order: chips are picked in this order, so a
#: run replays the same picks (chip ids are random uuids).
_numbers = itertools.count(1)


def number() -> str:
    """The next phone number of this run."""
    return f"+5511{next(_numbers):09d}"


def seed(engine: sa.Engine, size: str) -> None:
    """A pool to start from: active chips holding conversations, a chip just banned (its
    conversations still on it), ready and warming chips."""
    global _numbers
    _numbers = itertools.count(1)
    set_config(
        engine,
        **CONFIGS[size],
        warmup_buffer=0,
        auto_provision=False,
        disconnect_grace_minutes=0,
        flap_max_per_hour=0,
    )
    for _ in range(3):
        add_conversations(engine, make_chip(engine, "active", trust=90, telefone=number()), 2)
    add_conversations(engine, make_chip(engine, "banned", trust=90, telefone=number()), 1)
    for trust in (95, 92):
        make_chip(engine, "ready", trust=trust, telefone=number())
    for trust in (90, 70):
        make_chip(engine, "warming", trust=trust, telefone=number())


def run(engine: sa.Engine, sql: str, **params: object) -> int:
    """One statement of another service, committed; the rows it touched."""
    with engine.begin() as conn:
        return conn.execute(sa.text(sql), params).rowcount


def ids(engine: sa.Engine, *statuses: str) -> list[str]:
    """Chip ids in these statuses (all chips when none given), in creation order."""
    where = "WHERE status = ANY(:s)" if statuses else ""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT id::text FROM chips {where} ORDER BY telefone"), {"s": list(statuses)}
        )
        return list(rows.scalars())


def holding_conversations(engine: sa.Engine, *statuses: str) -> list[str]:
    """Chips in these statuses holding open conversations, in a stable order."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.id::text FROM chips c WHERE c.status = ANY(:s) AND EXISTS"
                " (SELECT 1 FROM conversation_chips WHERE chip_id = c.id AND active)"
                " ORDER BY c.telefone"
            ),
            {"s": list(statuses)},
        )
        return list(rows.scalars())


def bulk_load_without_triggers(engine: sa.Engine, statuses: list[str]) -> None:
    """A restore or bulk load under session_replication_role = replica: no trigger fires."""
    now = datetime.now(UTC)
    rows = [
        {
            "id": str(uuid.uuid4()),
            "telefone": number(),
            "status": status,
            "trust": 93,
            "started": now - timedelta(days=30),
            "ready_at": now - timedelta(days=2) if status != "warming" else None,
        }
        for status in statuses
    ]
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(
            sa.text(
                "INSERT INTO chips (id, telefone, ddd, status, trust_score, fase_warmup,"
                " warming_started_at, ready_at, evolution_connected)"
                " VALUES (:id, :telefone, 11, :status, :trust, 'operacao', :started, :ready_at, true)"
            ),
            rows,
        )


def delete_unreferenced(engine: sa.Engine, chip_id: str) -> int:
    """Another service deletes a chip nothing refers to (the foreign keys refuse the others)."""
    return run(
        engine,
        "DELETE FROM chips c WHERE c.id = :id"
        " AND NOT EXISTS (SELECT 1 FROM conversation_chips WHERE chip_id = c.id OR migrated_from = c.id)"
        " AND NOT EXISTS (SELECT 1 FROM orchestrator_operations"
        "                 WHERE chip_id = c.id OR chip_destino_id = c.id)",
        id=chip_id,
    )


@dataclass(frozen=True)
class Seen:
    """The pool at one moment: statuses by chip, the true active count, the operation rows."""

    statuses: dict[str, str]
    active: int
    tallied_active: int
    operations: set[str]


def look(engine: sa.Engine) -> Seen:
    """What the test compares before and after a use case (one snapshot)."""
    with engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        statuses = dict(conn.execute(sa.text("SELECT id::text, status FROM chips")).all())
        tallied = conn.execute(
            sa.text("SELECT coalesce(sum(n), 0) FROM chip_status_tally WHERE status = 'active'")
        ).scalar_one()
        ops = set(conn.execute(sa.text("SELECT id::text FROM orchestrator_operations")).scalars())
    active = sum(1 for s in statuses.values() if s == "active")
    return Seen(statuses, active, int(tallied), ops)


def new_operations(engine: sa.Engine, before: Seen) -> list[tuple[str, str | None, str | None]]:
    """(operacao, chip_id, chip_destino_id) of the operation rows written since `before`."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT id::text, operacao, chip_id::text, chip_destino_id::text"
                " FROM orchestrator_operations"
            )
        ).all()
    return [(op, chip, dest) for i, op, chip, dest in rows if i not in before.operations]


def open_conversations(engine: sa.Engine, chip_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM conversation_chips WHERE chip_id = :c AND active"),
            {"c": chip_id},
        ).scalar_one()


def producao_max(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT producao_max FROM pool_config")).scalar_one()


def use_case_violations(engine: sa.Engine) -> list[checker.Violation]:
    """The checker's findings of the kinds no use case may leave behind."""
    return [v for v in checker.find_violations(engine) if v.kind in USE_CASE_KINDS]
