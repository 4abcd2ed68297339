"""Dead numbers made visible: `status` and `report` show the banned numbers held and their cost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from orchestrator.domain.release import release_due, release_opens_at
from orchestrator.domain.report import COST_UNKNOWN, Month
from orchestrator.domain.status import COST_UNKNOWN as STATUS_COST_UNKNOWN
from orchestrator.ops import render
from orchestrator.services import cycle, reports
from orchestrator.store import repository as repo
from orchestrator.store.schema import operations
from tests.factories import make_chip, set_config

pytestmark = pytest.mark.db


def a_pool_with_three_banned_numbers(engine: sa.Engine) -> None:
    """Two banned chips replaced, one banned and not handled yet, beside live ones."""
    for _ in range(2):
        make_chip(engine, "banned", degraded_at=sa.func.now())
    make_chip(engine, "banned")
    make_chip(engine, "active")
    make_chip(engine, "ready", trust=95)
    make_chip(engine, "degraded", degraded_at=sa.func.now())
    make_chip(engine, "cancelled")


def test_status_shows_the_banned_numbers_held_and_what_they_cost_a_month(
    clean_db: sa.Engine,
) -> None:
    # Given three banned numbers held at R$ 49.90 a month, auto_cancel_banned off (the default)
    a_pool_with_three_banned_numbers(clean_db)
    set_config(clean_db, number_monthly_cost=49.90)
    # When the status is read
    status = cycle.pool_status(clean_db)
    # Then it counts them and prices them; nothing releases them
    assert status["totais"]["banned_retidos"] == {
        "count": 3,
        "custo_mensal": 149.7,
        "custo_desconhecido": None,
        "auto_cancel_banned": False,
        "liberacao": None,
    }
    # And the table and the one-line view say so
    line = render.status_line(status)
    assert "banned 3 (BRL 149.70/mes; auto_cancel_banned desligado: pagos ate cancelar)" in line


def test_with_auto_cancel_banned_on_status_says_when_they_are_released(
    clean_db: sa.Engine,
) -> None:
    a_pool_with_three_banned_numbers(clean_db)
    set_config(clean_db, auto_cancel_banned=True)
    with clean_db.connect() as conn:
        now = repo.db_now(conn)
    held = cycle.pool_status(clean_db)["totais"]["banned_retidos"]
    # The cost is unknown (number_monthly_cost NULL) and said so, never a made-up 0
    assert (held["count"], held["custo_mensal"]) == (3, None)
    assert held["custo_desconhecido"] == STATUS_COST_UNKNOWN
    # They are released when the month's last day starts (or now, inside it)
    when = datetime.fromisoformat(held["liberacao"])
    assert when == release_opens_at(now) or release_due(now)


def op(engine: sa.Engine, operacao: str, at: datetime, chip_id: str, **metadata: object) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.insert(operations).values(
                operacao=operacao,
                chip_id=chip_id,
                motivo="gerado",
                sucesso=True,
                metadata=metadata,
                created_at=at,
            )
        )


def two_months_ago() -> Month:
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - 2
    return Month(index // 12, index % 12 + 1)


def test_report_shows_the_months_banned_numbers_and_what_they_cost(clean_db: sa.Engine) -> None:
    # Given numbers banned before, during and after a month, some cancelled, at R$ 49.90
    month = two_months_ago()
    start, end = month.start, month.end
    before, mid, after = start - timedelta(days=20), start + timedelta(days=10), end + timedelta(1)
    bought = {"created_at": before - timedelta(days=30)}
    make_chip(clean_db, "banned", degraded_at=before, **bought)  # dead all month
    make_chip(clean_db, "banned", degraded_at=mid, **bought)  # died in it
    make_chip(clean_db, "banned", degraded_at=after, **bought)  # died after it: not counted
    ours = make_chip(clean_db, "cancelled", degraded_at=before, **bought)
    op(clean_db, "cancel", mid, ours, salvy_reason="whatsapp-ban")  # released in it
    salvys = make_chip(clean_db, "cancelled", degraded_at=before, **bought)
    op(clean_db, "cancel", mid, salvys, status_anterior="banned")  # Salvy cancelled it in it
    early = make_chip(clean_db, "cancelled", degraded_at=before, **bought)
    op(clean_db, "cancel", before, early, salvy_reason="whatsapp-ban")  # released before it
    unneeded = make_chip(clean_db, "cancelled", degraded_at=before, **bought)
    op(clean_db, "cancel", mid, unneeded, salvy_reason="unnecessary")  # degraded, not banned
    make_chip(clean_db, "active", **bought)
    set_config(clean_db, number_monthly_cost=49.90)
    # When the month's report is read
    data = reports.month_report(clean_db, month.label)
    # Then 4 of the numbers billed were dead in it, and what they cost is told
    assert data["banned_held"] == {"count": 4, "cost": 199.6, "currency": "BRL"}
    assert data["cost"]["numbers_billed"] == 7
    # And with the cost unknown it says so
    set_config(clean_db, number_monthly_cost=None)
    unknown = reports.month_report(clean_db, month.label)["banned_held"]
    assert unknown == {
        "count": 4,
        "cost": None,
        "currency": "BRL",
        "unknown_reason": COST_UNKNOWN,
    }
