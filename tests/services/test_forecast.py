"""The forecast on a history generated with a known rate, lead time and loss (real PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from orchestrator.domain import forecast as fc
from orchestrator.services import forecast
from orchestrator.store.schema import operations
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
