"""The forecast on a history generated with a known rate, lead time and loss (real PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from orchestrator.domain import forecast as fc
from orchestrator.domain.signals import BANNED, GatewaySignal
from orchestrator.services import cycle, forecast
from orchestrator.services.signals import apply_gateway_signal
from orchestrator.store.schema import chips, operations
from tests.factories import make_chip, set_config
from tests.support.history import db_now, make_history

pytestmark = pytest.mark.db


def test_the_forecast_recovers_the_rate_lead_time_and_loss_it_was_generated_with(
    clean_db: sa.Engine,
) -> None:
    # Given 4 replacements a day (3 banned, 1 low trust) for 60 days, purchases that become
    # ready 23 days later (22, 23, 24 in turn) and 1 in 10 lost while warming
    made = make_history(clean_db, days=60, per_day=4, lead_days=23, lost_every=10)
    assert made["replacements"] == 240
    # When the forecast reads the last 60 days
    data = forecast.forecast(clean_db, window_days=60, service_level=0.95)
    # Then it recovers the rate, by reason, the lead time and the loss
    assert data["history_days"] in (59, 60)
    assert data["replacements_per_day"] == pytest.approx(4.0, rel=0.02)
    assert data["by_reason"] == {
        "banned": pytest.approx(3.0, rel=0.02),
        "low_trust": pytest.approx(1.0, rel=0.02),
    }
    assert data["lead_time_days"] == pytest.approx(23.0, abs=0.1)
    assert data["warmup_loss_rate"] == pytest.approx(0.1, abs=0.01)
    # and recommends the base stock for a mean demand of 4 * 23 = 92 with 10% lost
    rec = fc.recommend(4.0, 23.0, 0.1, 0.95)
    assert data["mean_demand_over_lead_time"] == pytest.approx(92, rel=0.02)
    assert data["recommended"]["warmup_buffer"] == pytest.approx(rec.warmup_buffer, abs=2)
    assert data["recommended"]["ready_min"] == pytest.approx(rec.ready_min, abs=2)
    # while the default config (10 + 3) finds no ready chip almost always
    assert data["current"] == {
        "warmup_buffer": 10,
        "ready_min": 3,
        "p_no_ready": pytest.approx(1.0, abs=0.01),
    }


def test_the_window_bounds_what_is_read(clean_db: sa.Engine) -> None:
    # Given the same history, read over its last 30 days only
    make_history(clean_db, days=60, per_day=4)
    data = forecast.forecast(clean_db, window_days=30)
    assert data["window_days"] == 30
    assert data["history_days"] == 30
    assert data["replacements_per_day"] == pytest.approx(4.0, rel=0.03)
    assert data["service_level"] == 0.95  # the config's


def test_too_little_history_says_so_and_invents_nothing(clean_db: sa.Engine) -> None:
    # Given an empty pool with no operations at all
    data = forecast.forecast(clean_db, window_days=60)
    assert data["history_days"] == 0
    assert data["replacements_per_day"] is None
    assert data["recommended"] == {"warmup_buffer": None, "ready_min": None}
    assert data["current"]["p_no_ready"] is None
    assert "too little history" in data["notes"][0]
    # Given only 3 days of operations
    make_history(clean_db, days=3, per_day=4, buy_days=0)
    data = forecast.forecast(clean_db, window_days=60)
    assert data["history_days"] == 2
    assert data["replacements_per_day"] is None and data["by_reason"] == {}


def test_a_banned_chip_that_found_no_ready_chip_counts_as_demand(clean_db: sa.Engine) -> None:
    # Given 10 days of history: 10 replacements, and 5 banned chips that found no ready chip
    now = db_now(clean_db)
    chip = make_chip(clean_db, "banned")
    rows = [("auto_replace", "Trust baixo", {"reason": "low_trust"})] * 10
    rows += [("migration", "Chip banido sem chip ready: conversas ...", {"reason": "banned"})] * 3
    rows += [("demotion", "Chip banido (sem chip ready)", {})] * 2
    rows += [("migration", "Conversas abertas em chip banned (fora de producao)", {})] * 4
    with clean_db.begin() as conn:
        for i, (operacao, motivo, meta) in enumerate(rows):
            conn.execute(
                sa.insert(operations).values(
                    operacao=operacao,
                    chip_id=chip,
                    motivo=motivo,
                    metadata=meta,
                    sucesso=True,
                    created_at=now - timedelta(days=10) + timedelta(hours=i),
                )
            )
    data = forecast.forecast(clean_db, window_days=60)
    # Then 15 replacements over 10 days (the stranded-row migrations are not demand)
    assert data["replacements"] == 15
    assert data["by_reason"] == {"banned": 0.5, "low_trust": 1.0}
    # and no chip became ready in the window: the lead time is not invented, warmup_days used
    assert data["lead_time_days"] is None
    assert data["lead_time_used_days"] == 21
    assert any("assumed" in note for note in data["notes"])


def test_the_forecast_uses_the_service_level_asked_for(clean_db: sa.Engine) -> None:
    make_history(clean_db, days=30, per_day=1, buy_days=40)
    set_config(clean_db, service_level=0.5)
    relaxed = forecast.forecast(clean_db, window_days=60)
    strict = forecast.forecast(clean_db, window_days=60, service_level=0.99)
    assert relaxed["service_level"] == 0.5 and strict["service_level"] == 0.99
    assert strict["recommended"]["ready_min"] > relaxed["recommended"]["ready_min"]


def _op(engine: sa.Engine, operacao: str, chip: str | None, at, **meta: object) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.insert(operations).values(
                operacao=operacao,
                chip_id=chip,
                motivo="teste",
                metadata=meta,
                sucesso=True,
                created_at=at,
            )
        )


def _banned_by_evolution(engine: sa.Engine, chip: str) -> None:
    """Evolution reports the chip's number banned (403): the receiver's own service applies it."""
    with engine.begin() as conn:
        name = f"plan-{chip}"
        conn.execute(sa.update(chips).where(chips.c.id == chip).values(instance_name=name))
    result = apply_gateway_signal(engine, GatewaySignal("connection.update", name, BANNED, 403))
    assert result["status"] == "accepted" and result["replace"] is None


def _legacy_warming_ban(engine: sa.Engine, chip: str, at) -> None:
    """A warming chip's ban as the receiver recorded it before its wording changed."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(chips).where(chips.c.id == chip).values(status="banned", degraded_at=at)
        )
        conn.execute(
            sa.insert(operations).values(
                operacao="demotion",
                chip_id=chip,
                motivo="Chip banido (Evolution) em warming",
                metadata={},
                sucesso=True,
                created_at=at,
            )
        )


def test_a_chip_lost_while_warming_is_warm_up_loss_never_demand(clean_db: sa.Engine) -> None:
    # Given 28 days of history: 10 replacements (every 2.8 days from 28 days ago), and 20
    # warming chips bought 25 to 27 days ago and banned: 10 now through the webhook, 10 in the
    # rows an earlier version wrote ("Chip banido (Evolution) em warming", which the forecast
    # took for unmet demand), beside 10 chips bought then that became ready 22 days later
    now = db_now(clean_db)
    for i in range(10):
        at = now - timedelta(days=28 - 2.8 * i)
        _op(clean_db, "auto_replace", make_chip(clean_db, "degraded"), at, reason="low_trust")
    for i in range(20):
        bought = now - timedelta(days=27 - i / 10)
        chip = make_chip(clean_db, "warming", created_at=bought)
        _op(clean_db, "auto_provision", chip, bought)
        if i % 2:
            _banned_by_evolution(clean_db, chip)
        else:
            _legacy_warming_ban(clean_db, chip, bought + timedelta(days=5))
    for i in range(10):
        bought = now - timedelta(days=26 - i / 10)
        chip = make_chip(clean_db, "active", created_at=bought, ready_at=bought + timedelta(22))
        _op(clean_db, "auto_provision", chip, bought)
        _op(clean_db, "promotion_warming_ready", chip, bought + timedelta(22))
    # When the forecast reads the window
    data = forecast.forecast(clean_db, window_days=60)
    # Then the demand is the 10 replacements over 28 days, 0.36 a day (counting the 20 warm-up
    # bans as unmet demand too made it 30 / 28 = 1.07)
    assert data["history_days"] == 28
    assert data["replacements"] == 10
    assert data["replacements_per_day"] == pytest.approx(10 / 28, abs=0.001)
    assert data["by_reason"] == {"low_trust": pytest.approx(10 / 28, abs=0.001)}
    # and the 20 are the warm-up loss, once: 20 of the 30 bought 22+ days ago
    assert data["warmup_loss_rate"] == pytest.approx(20 / 30, abs=0.001)
    assert data["lead_time_days"] == pytest.approx(22, abs=0.01)
    # which is too high to plan on: flagged, said, and planned at 50%, not 67%
    assert data["warmup_loss_flagged"] is True
    assert data["warmup_loss_planned"] == fc.LOSS_CAP
    assert any("too high to plan on" in note for note in data["notes"])
    rec = fc.recommend(10 / 28, 22, 0.5, 0.95)  # a pipeline of 0.357 * 22 / 0.5 = 15.7
    assert data["recommended"] == {"warmup_buffer": rec.warmup_buffer, "ready_min": rec.ready_min}
    assert data["recommended"]["warmup_buffer"] == 16


def test_a_ready_chip_banned_through_the_webhook_is_a_ready_chip_consumed(
    clean_db: sa.Engine,
) -> None:
    # Given 10 days of history: 5 replacements and a ready chip banned by Evolution
    now = db_now(clean_db)
    for i in range(5):
        at = now - timedelta(days=10 - i)
        _op(clean_db, "auto_replace", make_chip(clean_db, "degraded"), at)
    ready = make_chip(clean_db, "ready")
    _banned_by_evolution(clean_db, ready)
    data = forecast.forecast(clean_db, window_days=60)
    # Then it is demand (the ready tier lost it), under its own reason
    assert data["replacements"] == 6
    assert data["by_reason"] == {"banned_while_ready": 0.1, "sem_motivo": 0.5}


def test_auto_size_plans_a_flagged_loss_at_its_bound_and_never_raises_the_caps(
    clean_db: sa.Engine,
) -> None:
    # Given a replacement a day for 30 days and every number bought in those days lost warming
    make_history(clean_db, days=30, per_day=1, buys_per_day=1, buy_days=30, lost_every=1)
    set_config(
        clean_db,
        auto_size=True,
        producao_min=0,
        ready_min=0,
        warmup_buffer=1,
        max_provisions_per_cycle=2,
        max_purchases_per_day=50,
    )
    # When the next cycle is planned
    plan, status, config = cycle.plan(clean_db)
    # Then the loss (100%) is planned as 50%: 30 replacements over 29.5 days (the first is
    # half a day in), a pipeline of 1.017 x 21 / 0.5 = 42.7, so 43; not the 2100 that the
    # 0.99 clamp asked for. The reserve target rises to 43 + the safety stock
    rec = fc.recommend(30 / 29.5, 21, fc.LOSS_CAP, 0.95)
    assert rec.warmup_buffer == 43
    assert status["auto_size"]["used"] == {"warmup_buffer": 43, "ready_min": rec.ready_min}
    assert plan.reserve_target == 43 + rec.ready_min
    # and the caps stay as configured: 2 bought this cycle, 50 a day at most
    assert (config.max_provisions_per_cycle, config.max_purchases_per_day) == (2, 50)
    assert plan.provision == 2


def test_chips_returned_to_service_are_not_bought_again(clean_db: sa.Engine) -> None:
    # Given 20 days of 2 replacements a day, a quarter of them chips that came back to ready
    make_history(clean_db, days=20, per_day=2, buy_days=0)
    now = db_now(clean_db)
    for i in range(10):
        _op(clean_db, "rehabilitation", make_chip(clean_db, "ready"), now - timedelta(days=i))
    data = forecast.forecast(clean_db, window_days=60)
    # Then 2 consumed a day, 0.5 returned: the cycle buys 1.5 a day again, and the forecast
    # plans that (no lead time measured: 21 days; no loss measured: 0)
    assert data["replacements_per_day"] == pytest.approx(2.0, rel=0.03)
    assert data["returned_per_day"] == pytest.approx(0.5, rel=0.03)
    assert data["demand_per_day"] == pytest.approx(1.5, rel=0.03)
    rec = fc.recommend(data["demand_per_day"], 21, None, 0.95)
    assert data["recommended"] == {"warmup_buffer": rec.warmup_buffer, "ready_min": rec.ready_min}
    # 30 net over 19.75 days (the first replacement is 6 hours in): ceil(1.52 x 21) = 32; the
    # gross 2 a day would have asked for 43
    assert rec.warmup_buffer == 32
