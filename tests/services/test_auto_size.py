"""auto_size: the cycle plans and buys with max(configured, recommended), and says so."""

from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa

from orchestrator import task_names
from orchestrator.adapters import planning_cache
from orchestrator.domain import forecast as fc
from orchestrator.services import cycle, dispatch, forecast
from orchestrator.store import repository as repo
from orchestrator.store.schema import chips
from tests.factories import set_config
from tests.services.test_cycle import Broker
from tests.support.history import make_history

pytestmark = pytest.mark.db


@pytest.fixture
def fresh_redis(redis_client: redis.Redis) -> redis.Redis:
    for key in redis_client.scan_iter("chiporch:*"):
        if key != b"chiporch:test-claim":
            redis_client.delete(key)
    return redis_client


@pytest.fixture
def busy_pool(clean_db: sa.Engine) -> sa.Engine:
    """A replacement a day for 60 days, purchases every other day ready 23 days later (each
    since taken into production); the configured reserve (10 warming, 0 ready) already met, so
    only auto_size would buy."""
    make_history(clean_db, days=60, per_day=1, buys_per_day=0.5, buy_days=90)
    with clean_db.begin() as conn:
        conn.execute(sa.text("UPDATE chips SET status = 'active' WHERE status = 'ready'"))
    set_config(clean_db, producao_min=0, warmup_buffer=10, ready_min=0)
    return clean_db


def warming_now(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        query = sa.select(sa.func.count()).where(chips.c.status.in_(("warming", "provisioning")))
        return conn.execute(query).scalar_one()


def expected(engine: sa.Engine) -> fc.Recommendation:
    with engine.connect() as conn:
        config = repo.load_config(conn)
        rec = fc.recommend_from(forecast.measure_for(conn, config), config)
    assert rec is not None
    return rec


def test_with_auto_size_off_the_configured_buffer_is_used_and_nothing_recommended(
    busy_pool: sa.Engine,
) -> None:
    assert warming_now(busy_pool) >= 10
    plan, status, _ = cycle.plan(busy_pool)
    assert plan.provision == 0
    assert status["auto_size"] == {
        "on": False,
        "configured": {"warmup_buffer": 10, "ready_min": 0},
        "recommended": None,
        "used": {"warmup_buffer": 10, "ready_min": 0},
    }


def test_with_auto_size_on_the_plan_uses_the_larger_recommendation_and_says_so(
    busy_pool: sa.Engine,
) -> None:
    # Given auto_size on and a history that asks for more than 10 warming and 0 ready
    set_config(busy_pool, auto_size=True)
    rec = expected(busy_pool)
    assert rec.warmup_buffer > 10 and rec.ready_min > 0
    # When the next cycle is planned
    plan, status, _ = cycle.plan(busy_pool)
    # Then it plans with the recommendation and status says where it came from
    assert status["auto_size"] == {
        "on": True,
        "configured": {"warmup_buffer": 10, "ready_min": 0},
        "recommended": {"warmup_buffer": rec.warmup_buffer, "ready_min": rec.ready_min},
        "used": {"warmup_buffer": rec.warmup_buffer, "ready_min": rec.ready_min},
    }
    assert status["warming"]["buffer"] == rec.warmup_buffer
    assert status["ready"]["min"] == rec.ready_min
    assert plan.deficits.warming == rec.warmup_buffer - warming_now(busy_pool)
    assert plan.provision == 3  # max_provisions_per_cycle
    # and `status` reads the same
    assert cycle.pool_status(busy_pool)["auto_size"] == status["auto_size"]


def test_a_configured_value_above_the_recommendation_is_kept(busy_pool: sa.Engine) -> None:
    set_config(busy_pool, auto_size=True, ready_min=500)
    _, status, _ = cycle.plan(busy_pool)
    assert status["auto_size"]["used"]["ready_min"] == 500


def test_the_cycle_buys_up_to_the_sized_buffer_and_caches_the_measurement(
    busy_pool: sa.Engine, fresh_redis: redis.Redis
) -> None:
    # Given auto_size on
    set_config(busy_pool, auto_size=True)
    before = warming_now(busy_pool)
    # When a cycle runs
    broker = Broker()
    result = dispatch.run_cycle(busy_pool, fresh_redis, broker, period_seconds=60)
    # Then it bought 3 numbers (the configured buffer alone would buy none)
    assert result["dispatched"]["provision_chip"] == 3
    assert broker.names().count(task_names.PROVISION) == 3
    assert warming_now(busy_pool) == before + 3
    # and the measurement is cached for the next cycles
    assert fresh_redis.exists(planning_cache.KEY.format(name="60d-21w"))


def test_a_cached_measurement_is_what_the_next_cycle_uses(
    busy_pool: sa.Engine, fresh_redis: redis.Redis
) -> None:
    # Given a cached measurement of a quiet pool (nothing replaced in 30 days)
    set_config(busy_pool, auto_size=True)
    quiet = fc.History(window_days=60, history_days=30, span_days=30.0)
    planning_cache.put(fresh_redis, "60d-21w", {**vars(quiet), "by_reason": {}})
    reserve = warming_now(busy_pool)
    # When a cycle runs
    result = dispatch.run_cycle(busy_pool, fresh_redis, Broker(), period_seconds=60)
    # Then it sized from the cache (recommendation 0 warming, 1 ready: target 10 + 1), not from
    # the busy history (which buys the cap, 3)
    assert result["dispatched"]["provision_chip"] == max(0, 10 + 1 - reserve) < 3
