"""Cycles that overlap, and sends that fail: never more purchases than the deficit, nothing stuck.

The overlap is forced, not hoped for: the test's own connection holds a SHARE lock on `chips`
(reads go on, inserts wait), so every cycle stops between its snapshot and its intent insert;
each cycle's guard is then lost (its connection killed, as a pooler or a failover would) so the
next cycle is not skipped. Then the lock is released and the cycles insert.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import redis
import sqlalchemy as sa

from orchestrator import task_names
from orchestrator.adapters import locks
from orchestrator.services import dispatch
from orchestrator.store import db
from orchestrator.store.schema import chips
from tests.factories import make_chip, set_config
from tests.services.test_cycle import Broker
from tests.support.pg_waits import kill_cycle_guard_holder as kill_guard_holder
from tests.support.pg_waits import wait_until, waiting_backends

pytestmark = pytest.mark.db

#: The cycle guard's advisory key (absent before the guard existed).
GUARD_KEY = getattr(locks, "CYCLE_GUARD_KEY", None)


def intents(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(sa.func.count()).where(chips.c.status == "provisioning")
        ).scalar_one()


def empty_buffer(engine: sa.Engine) -> int:
    """A warming buffer of 3 with nothing in it: deficit 3, up to 3 per cycle."""
    set_config(engine, producao_min=0, ready_min=0, warmup_buffer=3, max_provisions_per_cycle=3)
    return 3


def short_reserve(engine: sa.Engine) -> int:
    """Target 3 + 4; 2 fit ready chips, 1 that may not serve (disconnected), 1 warming: 4 short."""
    set_config(engine, producao_min=0, ready_min=3, warmup_buffer=4, max_provisions_per_cycle=9)
    make_chip(engine, "ready", trust=95)
    make_chip(engine, "ready", trust=95)
    make_chip(engine, "ready", trust=95, evolution_connected=False)
    make_chip(engine, "warming", trust=50)
    return 4


@pytest.mark.parametrize("overlapping", [2, 8])
@pytest.mark.parametrize("pool", [empty_buffer, short_reserve])
def test_overlapping_cycles_buy_exactly_the_deficit(
    clean_db: sa.Engine, redis_client: redis.Redis, overlapping: int, pool: Callable
) -> None:
    # Given a pool whose reserve is `deficit` short of its target
    deficit = pool(clean_db)
    brokers = [Broker() for _ in range(overlapping)]
    results: list[dict] = []
    threads = []
    # One worker process runs one cycle at a time; here many share a process, so a larger pool.
    cycles_engine = db.create_engine(clean_db.url, pool_size=3 * overlapping)
    # When that many cycles each stop between their snapshot and their intent insert
    with clean_db.connect() as holder:
        holder.execute(sa.text("LOCK TABLE chips IN SHARE MODE"))
        for broker in brokers:
            redis_client.delete("chiporch:cycle:slot")  # the old period slot, if any
            thread = threading.Thread(
                target=lambda b=broker: results.append(
                    dispatch.run_cycle(cycles_engine, redis_client, b, period_seconds=60)
                )
            )
            thread.start()
            threads.append(thread)
            started = len(threads)
            wait_until(lambda: waiting_backends(clean_db) == started)  # noqa: B023
            kill_guard_holder(clean_db)
        # ... and then go on together
        holder.commit()
    for thread in threads:
        thread.join(30)
    cycles_engine.dispose()
    # Then every cycle planned, and between them they bought exactly the deficit
    assert [r["status"] for r in results] == ["planned"] * overlapping
    assert sum(r["dispatched"]["provision_chip"] for r in results) == deficit
    assert sum(b.names().count(task_names.PROVISION) for b in brokers) == deficit
    assert intents(clean_db) == deficit


class FailingBroker(Broker):
    """A broker that refuses the first send of one task name (a broker blip)."""

    def __init__(self, failing: str) -> None:
        super().__init__()
        self.failing = failing

    def __call__(self, name: str, args: list, task_id: str | None) -> None:
        if name == self.failing:
            self.failing = ""
            raise ConnectionError("broker unavailable")
        super().__call__(name, args, task_id)


def test_a_task_whose_send_failed_is_sent_by_the_next_cycle(
    clean_db: sa.Engine, redis_client: redis.Redis
) -> None:
    # Given a chip to replace, and a broker that fails the send of that replacement once
    set_config(clean_db, auto_provision=False)
    low = make_chip(clean_db, "active", trust=10)
    with pytest.raises(ConnectionError):
        dispatch.run_cycle(
            clean_db, redis_client, FailingBroker(task_names.REPLACE), period_seconds=60
        )
    # When the next cycle runs
    broker = Broker()
    result = dispatch.run_cycle(clean_db, redis_client, broker, period_seconds=60)
    # Then it sends the replacement: nothing was queued, so nothing is "already queued"
    assert (task_names.REPLACE, [low, "low_trust"], None) in broker.sent
    assert result["already_queued"] == 0


def test_a_purchase_whose_task_could_not_be_sent_is_not_left_in_flight(
    clean_db: sa.Engine, redis_client: redis.Redis
) -> None:
    # Given a deficit of 2 and a broker that fails the first purchase's send
    set_config(clean_db, producao_min=0, ready_min=0, warmup_buffer=2)
    with pytest.raises(ConnectionError):
        dispatch.run_cycle(
            clean_db, redis_client, FailingBroker(task_names.PROVISION), period_seconds=60
        )
    # Then no intent is left counting in flight without a task to settle it
    assert intents(clean_db) == 0
    # And the next cycle buys the whole deficit
    broker = Broker()
    dispatch.run_cycle(clean_db, redis_client, broker, period_seconds=60)
    assert broker.names().count(task_names.PROVISION) == 2 == intents(clean_db)
