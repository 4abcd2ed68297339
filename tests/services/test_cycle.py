"""The cycle's planning and fan-out (dispatch.run_cycle) on real PostgreSQL and Redis.

`send` here is a plain function collecting what would go to the broker; the Celery side of the
same path is covered by tests/worker.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa

from orchestrator import task_names
from orchestrator.adapters import locks
from orchestrator.errors import Rejected
from orchestrator.services import dispatch
from orchestrator.store.db import transaction
from orchestrator.store.schema import alert_state, chips, outbox
from tests.factories import add_conversations, make_chip, set_config

pytestmark = pytest.mark.db


class Broker:
    """Collects dispatched tasks."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list, str | None]] = []

    def __call__(self, name: str, args: list, task_id: str | None) -> None:
        self.sent.append((name, args, task_id))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.sent]


@pytest.fixture
def fresh_redis(redis_client: redis.Redis) -> redis.Redis:
    for key in redis_client.scan_iter("chiporch:*"):
        if key != b"chiporch:test-claim":
            redis_client.delete(key)
    return redis_client


def cycle(engine: sa.Engine, client: redis.Redis, broker: Broker) -> dict:
    return dispatch.run_cycle(engine, client, broker, period_seconds=60)


def alerts(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(outbox.c.texto).where(outbox.c.canal == "alertas")).scalars()
        )


def test_a_cycle_fans_out_one_task_per_chip_and_per_number(
    clean_db: sa.Engine, fresh_redis: redis.Redis
) -> None:
    set_config(
        clean_db, producao_min=3, producao_max=4, warmup_buffer=4, max_provisions_per_cycle=2
    )
    low = make_chip(clean_db, "active", trust=10)
    make_chip(clean_db, "active")
    make_chip(clean_db, "ready", trust=95)
    ready2 = make_chip(clean_db, "ready", trust=90)
    warming = make_chip(clean_db, "warming", trust=90)
    broker = Broker()

    result = dispatch.run_cycle(clean_db, fresh_redis, broker, period_seconds=60)

    assert result["status"] == "planned"
    assert ("orchestrator.replace_chip", [low, "low_trust"], None) in broker.sent
    assert ("orchestrator.promote_warming_to_ready", [warming], None) in broker.sent
    assert ("orchestrator.promote_ready_to_active", [ready2], None) in broker.sent
    assert broker.names().count("orchestrator.provision_chip") == 2
    assert result["dispatched"] == {
        "replace_chip": 1,
        "promote_warming_to_ready": 1,
        "promote_ready_to_active": 1,
        "provision_chip": 2,
        "cancel_chip": 0,
        "migrate_conversations": 0,
    }


def test_purchase_intents_are_saved_before_dispatch_so_the_next_cycle_counts_them(
    clean_db: sa.Engine, fresh_redis: redis.Redis
) -> None:
    set_config(clean_db, producao_min=0, ready_min=0, warmup_buffer=5, max_provisions_per_cycle=3)
    first, second = Broker(), Broker()
    cycle(clean_db, fresh_redis, first)
    cycle(clean_db, fresh_redis, second)
    assert first.names().count("orchestrator.provision_chip") == 3
    assert second.names().count("orchestrator.provision_chip") == 2  # 5 - 3 in flight
    with clean_db.connect() as conn:
        names = set(
            conn.execute(
                sa.select(chips.c.provisioning_name).where(chips.c.status == "provisioning")
            ).scalars()
        )
    assert {f"chiporch-{task_id}" for _, _, task_id in first.sent + second.sent} == names


def test_a_cycle_right_after_another_plans_and_one_during_another_is_skipped(
    clean_db: sa.Engine, fresh_redis: redis.Redis
) -> None:
    # Given a cycle just finished: one right after it (ops from Flower, say) still plans
    assert cycle(clean_db, fresh_redis, Broker())["status"] == "planned"
    assert cycle(clean_db, fresh_redis, Broker())["status"] == "planned"
    # When a cycle is running (its guard held on another connection)
    with clean_db.connect() as other:
        other.execute(sa.select(sa.func.pg_advisory_lock(locks.CYCLE_GUARD_KEY)))
        broker = Broker()
        during = cycle(clean_db, fresh_redis, broker)
        other.execute(sa.select(sa.func.pg_advisory_unlock(locks.CYCLE_GUARD_KEY)))
        other.commit()
    # Then the one sent meanwhile is skipped and dispatches nothing; the next one plans
    assert during == {"status": "skipped", "reason": "cycle in progress"}
    assert broker.sent == []
    assert cycle(clean_db, fresh_redis, Broker())["status"] == "planned"


def test_a_worker_dying_mid_cycle_does_not_leave_the_guard_behind(
    clean_db: sa.Engine, fresh_redis: redis.Redis
) -> None:
    # Given a connection holding the cycle guard is killed (its worker died mid-cycle)
    with clean_db.connect() as dying:
        dying.execute(sa.select(sa.func.pg_advisory_lock(locks.CYCLE_GUARD_KEY)))
        dying.commit()
        pid = dying.execute(sa.select(sa.func.pg_backend_pid())).scalar_one()
        with clean_db.connect() as admin:
            admin.execute(sa.select(sa.func.pg_terminate_backend(pid)))
            admin.commit()
        dying.invalidate()
    # When the next cycle starts
    # Then it plans: the guard died with its connection
    deadline = time.monotonic() + 10
    while (result := cycle(clean_db, fresh_redis, Broker()))["status"] != "planned":
        assert time.monotonic() < deadline, result  # the backend takes a moment to exit
        time.sleep(0.05)


def test_a_chip_already_queued_is_not_queued_again(
    clean_db: sa.Engine, fresh_redis: redis.Redis
) -> None:
    low = make_chip(clean_db, "active", trust=10)
    first, second = Broker(), Broker()
    cycle(clean_db, fresh_redis, first)
    result = cycle(clean_db, fresh_redis, second)
    assert first.names().count("orchestrator.replace_chip") == 1
    assert "orchestrator.replace_chip" not in second.names()
    assert result["already_queued"] == 1
    locks.clear_queued(fresh_redis, task_names.REPLACE, low)  # the task started
    third = Broker()
    cycle(clean_db, fresh_redis, third)
    assert "orchestrator.replace_chip" in third.names()


def test_every_cycle_sends_one_migration_per_chip_left_holding_conversations(
    clean_db: sa.Engine, fresh_redis: redis.Redis
) -> None:
    # Given open conversations a router left on chips of every status that does not serve, a
    # banned chip not yet handled (replace takes its conversations), and a busy active chip
    set_config(clean_db, producao_min=1, producao_max=3, auto_provision=False)
    add_conversations(clean_db, make_chip(clean_db, "active"), 3)
    stranded = {
        status: make_chip(clean_db, status, degraded_at=sa.func.now())
        for status in ("degraded", "banned", "cancelled", "ready", "warming")
    }
    for chip in stranded.values():
        add_conversations(clean_db, chip, 2)
    fresh_ban = make_chip(clean_db, "banned")
    add_conversations(clean_db, fresh_ban, 2)
    make_chip(clean_db, "ready", trust=95)
    broker = Broker()
    # When the cycle runs, and again in the next period
    result = cycle(clean_db, fresh_redis, broker)
    again = cycle(clean_db, fresh_redis, Broker())
    # Then one migrate_conversations per stranded chip, none for the chip being replaced, and the
    # next cycle sends no duplicate while those are queued
    migrate = [args for name, args, _ in broker.sent if name == task_names.MIGRATE]
    assert sorted(migrate) == sorted([chip] for chip in stranded.values())
    assert (task_names.REPLACE, [fresh_ban, "banned"], None) in broker.sent
    assert result["dispatched"]["migrate_conversations"] == 5
    assert again["dispatched"]["migrate_conversations"] == 0


def test_a_critical_pool_alerts_once_per_cooldown(
    clean_db: sa.Engine, fresh_redis: redis.Redis
) -> None:
    set_config(clean_db, producao_min=5, auto_provision=False)
    for _ in range(10):
        cycle(clean_db, fresh_redis, Broker())
    assert sum("CRITICO" in a for a in alerts(clean_db)) == 1
    with clean_db.begin() as conn:
        conn.execute(
            sa.update(alert_state).values(last_sent_at=sa.func.now() - timedelta(minutes=31))
        )
    cycle(clean_db, fresh_redis, Broker())
    cycle(clean_db, fresh_redis, Broker())
    assert sum("CRITICO" in a for a in alerts(clean_db)) == 2


def test_the_storm_brake_holds_disconnections_and_alerts_once(
    clean_db: sa.Engine, fresh_redis: redis.Redis
) -> None:
    set_config(clean_db, producao_min=4, disconnect_grace_minutes=0)
    for _ in range(4):
        make_chip(clean_db, "active", evolution_connected=False)
    low = make_chip(clean_db, "active", trust=5)
    broker = Broker()
    result = cycle(clean_db, fresh_redis, broker)
    cycle(clean_db, fresh_redis, Broker())
    assert result["storm"] is True and result["held_for_storm"] == 4
    assert [args for name, args, _ in broker.sent if name == "orchestrator.replace_chip"] == [
        [low, "low_trust"]
    ]
    assert sum("desconectados" in a for a in alerts(clean_db)) == 1


def test_the_cycle_refuses_to_plan_without_a_pool_config_and_alerts(
    clean_db: sa.Engine, fresh_redis: redis.Redis
) -> None:
    with clean_db.begin() as conn:
        conn.execute(sa.text("DELETE FROM pool_config"))
    broker = Broker()
    result = cycle(clean_db, fresh_redis, broker)
    assert result["status"] == "rejected" and "pool_config" in result["reason"]
    assert broker.sent == []
    assert any("pool_config" in a for a in alerts(clean_db))


def test_a_constraint_violation_surfaces_as_a_clear_error(clean_db: sa.Engine) -> None:
    with pytest.raises(Rejected) as info, transaction(clean_db) as conn:
        conn.execute(sa.text("UPDATE pool_config SET producao_min = 30, producao_max = 20"))
    assert info.value.reason == "pool_config: producao_min must not exceed producao_max"
    with (
        pytest.raises(Rejected, match="telefone is already in the pool"),
        transaction(clean_db) as conn,
    ):
        conn.execute(sa.insert(chips).values(telefone="+5511999990000", status="ready"))
        conn.execute(sa.insert(chips).values(telefone="+5511999990000", status="ready"))


def test_the_cycle_refuses_an_invalid_pool_config_that_slipped_past_the_database(
    clean_db: sa.Engine, fresh_redis: redis.Redis
) -> None:
    # Given a nonsensical row written while the CHECK was not enforced (e.g. a manual restore)
    with clean_db.begin() as conn:
        conn.execute(
            sa.text("ALTER TABLE pool_config DROP CONSTRAINT pool_config_producao_min_le_max")
        )
        conn.execute(sa.text("UPDATE pool_config SET producao_min = 30, producao_max = 20"))
    try:
        broker = Broker()
        result = cycle(clean_db, fresh_redis, broker)
    finally:
        with clean_db.begin() as conn:
            conn.execute(sa.text("UPDATE pool_config SET producao_min = 10, producao_max = 20"))
            conn.execute(
                sa.text(
                    "ALTER TABLE pool_config ADD CONSTRAINT pool_config_producao_min_le_max"
                    " CHECK (producao_min <= producao_max)"
                )
            )
    # Then nothing is dispatched and ops are told why
    assert result["status"] == "rejected"
    assert "producao_min exceeds producao_max" in result["reason"]
    assert broker.sent == []
    assert any("pool_config invalida" in a for a in alerts(clean_db))
