"""The demo's screen drawn from a simulated demo pool on real PostgreSQL: pt-BR, one phone format."""

from __future__ import annotations

import io
import random

import pytest
import sqlalchemy as sa
from rich.console import Console

from orchestrator.dev import demo_seed, simulator
from orchestrator.domain.forecast import DEFAULT_WINDOW_DAYS
from orchestrator.ops import planning_view, render
from orchestrator.services import forecast
from orchestrator.services.cycle import pool_status
from orchestrator.store import repository
from tests.support.screen import english_words, phones, phones_in_another_format

pytestmark = pytest.mark.db

#: Every kind of change within a few steps: bans, disconnections, trust falls, warm-up phases.
STORMY = simulator.Knobs(
    ban_rate=0.2, disconnect_rate=0.3, trust_crash_rate=0.2, warmup_days_per_step=2.0
)


def test_the_demo_screen_of_a_simulated_pool_is_pt_br_with_one_phone_format(
    clean_db: sa.Engine,
) -> None:
    # Given the demo pool after a few stormy steps of the simulated services
    demo_seed.seed_demo_pool(clean_db, random.Random(3))
    rng, sent, events = random.Random(3), [], []
    for _ in range(4):
        events += simulator.step(clean_db, rng, lambda *task: sent.append(task), STORMY)
    # When the demo draws its screen and its plain lines from it, as it does each tick
    status = pool_status(clean_db, salvy_configured=False)
    with clean_db.connect() as conn:
        operations = repository.recent_operations(conn, 8)
    footer = planning_view.forecast_line(
        forecast.forecast(clean_db, window_days=DEFAULT_WINDOW_DAYS)
    )
    console = Console(record=True, width=240, file=io.StringIO(), color_system=None)
    console.print(render.live_view(status, operations, events, footer))
    text = console.export_text()
    plain = "\n".join(
        [
            *(f"simulador: {event}" for event in events),
            footer,
            render.status_line(status),
            *map(render.operation_line, operations),
        ]
    )
    # Then the simulator's lines name numbers, and every number on both is +55 11 91234-5678
    assert phones("\n".join(events)), events
    assert phones(text) and phones_in_another_format(text) == [], text
    assert phones(plain) and phones_in_another_format(plain) == [], plain
    # And no English word is left (forecast line, purchases notice, operation names)
    assert "previsao: " in text and "nada e comprado" in text
    assert english_words(text) == [], text
    assert english_words(plain) == [], plain
