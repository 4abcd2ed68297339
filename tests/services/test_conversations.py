"""Moving stranded conversations (conversations.migrate_conversations) on the real PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from orchestrator.errors import Rejected
from orchestrator.services import conversations, replacement
from orchestrator.store.schema import alert_state, conversation_chips, operations, outbox
from tests.factories import add_conversations, chip_row, make_chip

pytestmark = pytest.mark.db


def open_on(engine: sa.Engine, chip_id: str) -> list[str]:
    """The conversation ids open on a chip."""
    with engine.connect() as conn:
        return sorted(
            conn.execute(
                sa.select(conversation_chips.c.conversation_id).where(
                    conversation_chips.c.chip_id == chip_id, conversation_chips.c.active
                )
            ).scalars()
        )


def migrations(engine: sa.Engine) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(operations).where(operations.c.operacao == "migration")))


def alerts(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        query = sa.select(outbox.c.texto).where(outbox.c.canal == "alertas")
        return list(conn.execute(query).scalars())


def replaced_pair(engine: sa.Engine) -> tuple[str, str]:
    """A chip replaced by the real use case, and its replacement (now active)."""
    old = make_chip(engine, "active", trust=40)
    new = make_chip(engine, "ready", trust=95)
    result = replacement.replace_chip(engine, old, "low_trust")
    assert result["replacement_id"] == new
    return old, new


def test_conversations_left_on_a_replaced_chip_go_to_its_replacement_while_it_serves(
    clean_db: sa.Engine,
) -> None:
    # Given a replaced chip, a less loaded active chip, and three conversations a router put on
    # the replaced chip afterwards (from a stale read)
    old, new = replaced_pair(clean_db)
    make_chip(clean_db, "active", trust=99)
    late = add_conversations(clean_db, old, 3)
    # When its conversations are migrated
    result = conversations.migrate_conversations(clean_db, old)
    # Then all three are on the replacement, recorded as one migration operation
    assert result["status"] == "migrated"
    assert (result["target_id"], result["conversas_migradas"]) == (new, 3)
    assert open_on(clean_db, old) == []
    assert open_on(clean_db, new) == sorted(late)
    (op,) = migrations(clean_db)
    assert (op.chip_id, op.chip_destino_id, str(op.id)) == (old, new, result["operation_id"])
    assert op.metadata == {"conversas_migradas": 3, "destino_por": "substituto"}
    with clean_db.connect() as conn:
        moved = conn.execute(
            sa.select(conversation_chips.c.migrated_from, conversation_chips.c.migrated_at).where(
                conversation_chips.c.conversation_id.in_(late)
            )
        ).all()
    assert all(src == old and at is not None for src, at in moved)


@pytest.mark.parametrize(
    "no_longer_serves",
    [{"status": "degraded"}, {"evolution_connected": False}, {"trust_score": 10}],
    ids=["degraded", "disconnected", "low_trust"],
)
def test_when_the_replacement_no_longer_serves_they_go_to_the_least_loaded_healthy_active_chip(
    clean_db: sa.Engine, no_longer_serves: dict
) -> None:
    # Given a replaced chip whose replacement no longer serves, and two healthy active chips
    old, new = replaced_pair(clean_db)
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE chips SET "
                + ", ".join(f"{k} = :{k}" for k in no_longer_serves)
                + " WHERE id = :id"
            ),
            {**no_longer_serves, "id": new},
        )
    busy, idle = make_chip(clean_db, "active"), make_chip(clean_db, "active")
    add_conversations(clean_db, busy, 4)
    add_conversations(clean_db, idle, 1)
    add_conversations(clean_db, old, 2)
    # When its conversations are migrated
    result = conversations.migrate_conversations(clean_db, old)
    # Then they go to the least-loaded healthy active chip
    assert (result["status"], result["target_id"]) == ("migrated", idle)
    assert len(open_on(clean_db, idle)) == 3 and open_on(clean_db, old) == []
    (op,) = migrations(clean_db)
    assert op.metadata == {"conversas_migradas": 2, "destino_por": "menos_carregado"}


def test_migrating_twice_moves_once_and_writes_one_operation(clean_db: sa.Engine) -> None:
    # Given a cancelled chip holding two open conversations and an active chip
    chip = make_chip(clean_db, "cancelled")
    target = make_chip(clean_db, "active")
    add_conversations(clean_db, chip, 2)
    # When the task is delivered twice
    first = conversations.migrate_conversations(clean_db, chip)
    second = conversations.migrate_conversations(clean_db, chip)
    # Then the second finds nothing to move, and only one migration is recorded
    assert (first["status"], first["target_id"]) == ("migrated", target)
    assert second == {"status": "nothing_to_move", "chip_id": chip}
    assert len(migrations(clean_db)) == 1
    assert len(open_on(clean_db, target)) == 2


def test_an_active_chip_is_skipped_and_keeps_its_conversations(clean_db: sa.Engine) -> None:
    chip = make_chip(clean_db, "active")
    make_chip(clean_db, "active")
    add_conversations(clean_db, chip, 2)
    result = conversations.migrate_conversations(clean_db, chip)
    assert result == {"status": "skipped", "chip_id": chip, "reason": "chip serves"}
    assert len(open_on(clean_db, chip)) == 2 and migrations(clean_db) == []


@pytest.mark.parametrize("bad", ["not-a-uuid", str(uuid.uuid4()), 42, None])
def test_a_malformed_or_unknown_chip_id_is_rejected_and_changes_nothing(
    clean_db: sa.Engine, bad: object
) -> None:
    target = make_chip(clean_db, "active")
    with pytest.raises(Rejected) as caught:
        conversations.migrate_conversations(clean_db, bad)
    assert caught.value.code in ("malformed", "unknown_chip")
    assert migrations(clean_db) == [] and open_on(clean_db, target) == []


def test_with_no_healthy_active_chip_ops_are_alerted_once_and_nothing_moves(
    clean_db: sa.Engine,
) -> None:
    # Given a degraded chip with open conversations and no healthy active chip at all
    chip = make_chip(clean_db, "degraded", trust=30)
    make_chip(clean_db, "active", trust=10)  # low trust: not a target
    make_chip(clean_db, "active", evolution_connected=False)  # disconnected: not a target
    add_conversations(clean_db, chip, 3)
    # When the migration runs on three cycles in a row
    results = [conversations.migrate_conversations(clean_db, chip) for _ in range(3)]
    # Then each says no_target, nothing moved, no operation, and ops got exactly one alert
    assert [r["status"] for r in results] == ["no_target"] * 3
    assert len(open_on(clean_db, chip)) == 3 and migrations(clean_db) == []
    (alert,) = alerts(clean_db)
    assert "3 conversa(s)" in alert and "nenhum chip ativo saudavel" in alert
    with clean_db.connect() as conn:
        keys = list(conn.execute(sa.select(alert_state.c.key)).scalars())
    assert keys == [conversations.alert_key(chip)]


def test_a_ready_or_warming_chip_holding_conversations_is_emptied_and_keeps_its_status(
    clean_db: sa.Engine,
) -> None:
    # Given a router that put conversations on a ready and on a warming chip
    target = make_chip(clean_db, "active")
    ready, warming = make_chip(clean_db, "ready", trust=95), make_chip(clean_db, "warming")
    add_conversations(clean_db, ready, 1)
    add_conversations(clean_db, warming, 1)
    # When both are migrated
    for chip in (ready, warming):
        assert conversations.migrate_conversations(clean_db, chip)["status"] == "migrated"
    # Then the active chip holds them and the chips keep their status
    assert len(open_on(clean_db, target)) == 2
    assert (chip_row(clean_db, ready).status, chip_row(clean_db, warming).status) == (
        "ready",
        "warming",
    )


def backend_waiting_on_a_lock(engine: sa.Engine, pid: int | None = None, query: str = "") -> bool:
    """True once a backend (by pid, or by a piece of its query) waits for a row lock."""
    with engine.connect() as conn:
        return bool(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                    " AND (pid = :pid OR (:query <> '' AND query ILIKE '%' || :query || '%'))"
                ),
                {"pid": pid or 0, "query": query},
            ).scalar_one()
        )


def eventually(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_row_routed_onto_the_chip_during_a_migration_waits_and_the_next_run_moves_it(
    clean_db: sa.Engine,
) -> None:
    # Given a replaced chip with two late conversations, and its replacement's row held by
    # another transaction, so the migration stops inside its transaction holding the chip's lock
    old, new = replaced_pair(clean_db)
    add_conversations(clean_db, old, 2)
    holder = clean_db.connect()
    holder.execute(sa.text("SELECT 1 FROM chips WHERE id = :id FOR UPDATE"), {"id": new})
    first: dict = {}
    migration = threading.Thread(
        target=lambda: first.update(conversations.migrate_conversations(clean_db, old))
    )
    migration.start()
    eventually(lambda: backend_waiting_on_a_lock(clean_db, query="FOR SHARE"))
    # When a router inserts a conversation on the chip right then (plain autocommit INSERT)
    router = clean_db.connect().execution_options(isolation_level="AUTOCOMMIT")
    pid = router.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    routed = threading.Thread(
        target=lambda: router.execute(
            sa.insert(conversation_chips).values(conversation_id="late-one", chip_id=old)
        )
    )
    routed.start()
    # Then the INSERT waits for the migration (its foreign key needs the chip row)
    eventually(lambda: backend_waiting_on_a_lock(clean_db, pid=pid))
    holder.rollback()
    holder.close()
    migration.join(timeout=20)
    routed.join(timeout=20)
    router.close()
    # ... the migration moved the two it saw, the late row is kept, and the next run moves it
    assert (first["status"], first["conversas_migradas"]) == ("migrated", 2)
    assert open_on(clean_db, old) == ["late-one"]
    second = conversations.migrate_conversations(clean_db, old)
    assert (second["target_id"], second["conversas_migradas"]) == (new, 1)
    assert open_on(clean_db, old) == [] and len(open_on(clean_db, new)) == 3
    assert len(migrations(clean_db)) == 2
