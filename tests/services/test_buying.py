"""The cycle buys on the reserve (fit ready + warming + provisioning) up to ready_min +
warmup_buffer, within max_provisions_per_cycle and max_purchases_per_day, on the real database."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa

from orchestrator.services import cycle, cycle_purchases, dispatch
from orchestrator.store.schema import chips, outbox
from tests.factories import make_chip, set_config
from tests.services.test_cycle import Broker

pytestmark = pytest.mark.db


def intents(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        stmt = sa.select(sa.func.count()).where(chips.c.status == "provisioning")
        return conn.execute(stmt).scalar_one()


def run(engine: sa.Engine, client: redis.Redis) -> dict:
    return dispatch.run_cycle(engine, client, Broker(), period_seconds=60)


def test_idle_ready_chips_fill_the_reserve_so_nothing_is_bought(
    clean_db: sa.Engine, redis_client: redis.Redis
) -> None:
    # Given 9 idle ready chips and 1 warming (the seed would buy 3: warming 1 < buffer 4)
    set_config(clean_db, producao_min=0, ready_min=3, warmup_buffer=4)
    for _ in range(9):
        make_chip(clean_db, "ready", trust=95)
    make_chip(clean_db, "warming", trust=50)
    # When a cycle runs, nothing is bought, and the status shows the reserve against its target
    assert run(clean_db, redis_client)["dispatched"]["provision_chip"] == 0
    assert intents(clean_db) == 0
    assert cycle.pool_status(clean_db)["reserva"] == {"count": 10, "alvo": 7, "ready_aptos": 9}
    assert cycle.pool_status(clean_db)["saude"] == "saudavel"


def test_an_empty_ready_tier_is_refilled_though_the_warming_tier_is_full(
    clean_db: sa.Engine, redis_client: redis.Redis
) -> None:
    set_config(clean_db, producao_min=0, ready_min=3, warmup_buffer=4, max_provisions_per_cycle=5)
    for _ in range(4):
        make_chip(clean_db, "warming", trust=50)
    make_chip(clean_db, "ready", trust=95, evolution_connected=False)  # may not serve
    assert run(clean_db, redis_client)["dispatched"]["provision_chip"] == 3
    assert intents(clean_db) == 3


def test_the_recount_under_the_lock_never_subtracts_a_swap_already_done(
    clean_db: sa.Engine,
) -> None:
    # Given a plan that saw 3 fit ready chips and gave one to a swap (2 left), 0 warming,
    # target 0 + 4; and the swap already done when the purchases are recorded
    set_config(clean_db, producao_min=0, ready_min=0, warmup_buffer=4, max_provisions_per_cycle=9)
    make_chip(clean_db, "ready", trust=95)
    make_chip(clean_db, "ready", trust=95)
    make_chip(clean_db, "active")  # the swapped-in chip, no longer ready
    # When the purchases are recorded with what the plan left
    keys = cycle_purchases.record_intents(clean_db, 9, 15, ready_left=2)
    # Then the reserve is 2 (not 2 - 1): two numbers bought, not three
    assert len(keys) == 2 and intents(clean_db) == 2


def test_the_daily_cap_pauses_purchases_says_until_when_and_tells_ops_once(
    clean_db: sa.Engine, redis_client: redis.Redis
) -> None:
    # Given a reserve 7 short, 3 purchases per cycle, and at most 4 a day
    set_config(
        clean_db,
        producao_min=0,
        ready_min=3,
        warmup_buffer=4,
        max_provisions_per_cycle=3,
        max_purchases_per_day=4,
    )
    # When cycles run
    bought = [run(clean_db, redis_client)["dispatched"]["provision_chip"] for _ in range(4)]
    # Then they bought 3, then the 1 the cap left, then nothing
    assert bought == [3, 1, 0, 0] and intents(clean_db) == 4
    # And status says the cap holds purchases until the oldest turns 24 hours old
    with clean_db.connect() as conn:
        oldest = conn.execute(sa.select(sa.func.min(chips.c.created_at))).scalar_one()
    compras = cycle.pool_status(clean_db)["compras"]
    assert compras["estado"] == "limite_diario" and compras["compradas_24h"] == 4
    assert compras["pausadas_ate"] == (oldest + timedelta(days=1)).isoformat()
    assert "daily purchase cap reached" in compras["aviso"]
    # And ops were told once
    with clean_db.connect() as conn:
        texts = conn.execute(sa.select(outbox.c.texto).where(outbox.c.canal == "alertas"))
        assert sum("Limite diario de compras" in t for t in texts.scalars()) == 1
    # When those purchases are more than a day old, the cycle buys again
    with clean_db.begin() as conn:
        conn.execute(sa.text("UPDATE chips SET created_at = now() - interval '25 hours'"))
    assert run(clean_db, redis_client)["dispatched"]["provision_chip"] == 3
