"""Failing purchases back off: cycles against a Salvy stand-in that sells nothing or refuses us.

Each "cycle" here is what beat and the workers do once a minute: dispatch.run_cycle, then every
provision_chip task it dispatched. A minute passing is simulated by moving the back-off and the
alert cool-downs one minute into the past, so ten cycles take a second, not ten minutes.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa

from orchestrator import task_names
from orchestrator.adapters.salvy import SalvyClient
from orchestrator.dev.salvy_standin import DEFAULT_STOCK, SalvyStandin
from orchestrator.errors import Rejected
from orchestrator.services import cycle, dispatch
from orchestrator.services.cycle import pool_status
from orchestrator.services.purchase import provision
from orchestrator.store.schema import chips, operations, outbox
from tests.factories import set_config
from tests.services.test_cycle import Broker

pytestmark = pytest.mark.db


@pytest.fixture
def salvy_read_timeout() -> float:
    return 2.0


@pytest.fixture
def pool(clean_db: sa.Engine) -> sa.Engine:
    """An empty warming buffer of 3, up to 3 purchases per cycle, nothing else to do."""
    set_config(clean_db, producao_min=0, ready_min=0, warmup_buffer=3, max_provisions_per_cycle=3)
    return clean_db


def a_minute_passes(engine: sa.Engine, minutes: float = 1) -> None:
    """Move the purchase back-off and every alert cool-down into the past."""
    with engine.begin() as conn:
        if conn.execute(sa.text("SELECT to_regclass('purchase_backoff')")).scalar():
            conn.execute(
                sa.text(
                    "UPDATE purchase_backoff SET paused_until = paused_until - :d"
                    " WHERE paused_until IS NOT NULL"
                ),
                {"d": timedelta(minutes=minutes)},
            )
        conn.execute(
            sa.text("UPDATE alert_state SET last_sent_at = last_sent_at - :d"),
            {"d": timedelta(minutes=minutes)},
        )


def run_cycle_and_tasks(engine: sa.Engine, client: redis.Redis, salvy: SalvyClient) -> list[dict]:
    """One cycle and the purchases it dispatched, as the workers would run them."""
    broker = Broker()
    client.delete("chiporch:cycle:slot")  # a minute is a new period (for the old period slot)
    dispatch.run_cycle(engine, client, broker, period_seconds=60)
    outcomes = []
    for name, _, task_id in broker.sent:
        if name == task_names.PROVISION:
            try:
                outcomes.append(provision(engine, salvy, task_id))
            except Rejected as error:  # an older provision() raised some refusals
                outcomes.append({"status": "rejected", "code": error.code})
    return outcomes


def count(engine: sa.Engine, query: sa.Select) -> int:
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def alerts(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        query = sa.select(outbox.c.texto).where(outbox.c.canal == "alertas").order_by(outbox.c.id)
        return list(conn.execute(query).scalars())


def backoff_row(engine: sa.Engine) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT *, paused_until - now() AS left FROM purchase_backoff")
        ).one()


def intents_made(engine: sa.Engine) -> int:
    """Purchase attempts recorded: failed and completed auto_provision operations."""
    return count(
        engine,
        sa.select(sa.func.count()).where(operations.c.operacao == "auto_provision"),
    )


@pytest.mark.parametrize(
    ("fault", "cause"),
    [({"out_of_stock": list(DEFAULT_STOCK)}, "out_of_stock"), ({"refuse_token": True}, "token")],
)
def test_ten_failing_cycles_back_off_leave_no_rows_and_alert_once(
    pool: sa.Engine,
    redis_client: redis.Redis,
    salvy: SalvyClient,
    standin: SalvyStandin,
    fault: dict,
    cause: str,
) -> None:
    # Given Salvy sells nothing (every DDD out of stock, or our token refused)
    standin.set_faults(**fault)
    # When ten cycles run, a minute apart
    for _ in range(10):
        run_cycle_and_tasks(pool, redis_client, salvy)
        a_minute_passes(pool)
    # Then purchases backed off: 3 attempts in the first minute, then one probe per pause
    # (pauses of 1, 2 and 4 minutes: probes in cycles 2, 4 and 8)
    assert intents_made(pool) == 3 + 3
    assert standin.posts == 0
    # And no failed intent is left in chips, and ops were alerted once
    assert count(pool, sa.select(sa.func.count()).select_from(chips)) == 0
    (alert,) = alerts(pool)
    assert cause in alert.lower() or "estoque" in alert


def test_the_pause_grows_while_failures_persist_and_a_success_ends_it(
    pool: sa.Engine, redis_client: redis.Redis, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given every DDD is out of stock
    standin.set_faults(out_of_stock=list(DEFAULT_STOCK))
    # When the first cycle's three purchases fail
    outcomes = run_cycle_and_tasks(pool, redis_client, salvy)
    assert [o["code"] for o in outcomes] == ["out_of_stock"] * 3
    # Then purchases are paused for a minute: one failed batch is one step
    row = backoff_row(pool)
    assert (row.cause, row.failures) == ("out_of_stock", 1)
    assert timedelta(seconds=50) < row.left <= timedelta(minutes=1)
    # And a cycle within the pause buys nothing
    assert run_cycle_and_tasks(pool, redis_client, salvy) == []
    # When the pause ends, one probe fails each time: 2, 4, 8, 16, 30, 30 minutes
    for minutes in (2, 4, 8, 16, 30, 30):
        a_minute_passes(pool, backoff_row(pool).left.total_seconds() / 60 + 0.01)
        assert len(run_cycle_and_tasks(pool, redis_client, salvy)) == 1
        left = backoff_row(pool).left
        assert (
            timedelta(minutes=minutes) - timedelta(seconds=10) < left <= timedelta(minutes=minutes)
        )
    # When stock is back and the pause ends, the probe succeeds and ends the back-off
    standin.set_faults(out_of_stock=[])
    a_minute_passes(pool, 31)
    assert [o["status"] for o in run_cycle_and_tasks(pool, redis_client, salvy)] == ["provisioned"]
    row = backoff_row(pool)
    assert (row.failures, row.paused_until) == (0, None)
    # And the next cycle buys the rest of the deficit at full speed
    assert len(run_cycle_and_tasks(pool, redis_client, salvy)) == 2


def test_each_cause_alerts_once_per_cooldown(
    pool: sa.Engine, redis_client: redis.Redis, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given purchases failing for lack of stock, then for a refused token
    standin.set_faults(out_of_stock=list(DEFAULT_STOCK))
    run_cycle_and_tasks(pool, redis_client, salvy)
    a_minute_passes(pool, 2)
    run_cycle_and_tasks(pool, redis_client, salvy)
    standin.set_faults(out_of_stock=[], refuse_token=True)
    a_minute_passes(pool, 5)
    run_cycle_and_tasks(pool, redis_client, salvy)
    # Then one alert per cause
    texts = alerts(pool)
    assert len(texts) == 2
    assert "estoque" in texts[0] and "token" in texts[1]
    assert backoff_row(pool).cause == "refused_token"
    # When the cool-down (30 min) has passed and it still fails
    a_minute_passes(pool, 31)
    run_cycle_and_tasks(pool, redis_client, salvy)
    # Then that cause alerts again
    assert len(alerts(pool)) == 3


def test_status_and_plan_say_until_when_purchases_are_paused_and_why(
    pool: sa.Engine, redis_client: redis.Redis, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given a failed purchase (token refused)
    standin.set_faults(refuse_token=True)
    run_cycle_and_tasks(pool, redis_client, salvy)
    # When ops look at status and plan
    status = pool_status(pool)
    plan, plan_status, _ = cycle.plan(pool)
    # Then both say purchases are paused, until when and why, and the plan buys nothing
    notice = status["compras"]["aviso"]
    assert notice.startswith("purchases paused until ") and notice.endswith("(refused_token)")
    assert status["compras"]["estado"] == "pausadas" and status["compras"]["pausadas_ate"]
    assert plan_status["compras"]["aviso"] == notice
    assert plan.provision == 0 and plan.deficits.warming == 3
    assert plan.purchase_gate.cause == "refused_token"


def test_without_salvy_the_cycle_records_no_intents_says_so_and_alerts_once(
    pool: sa.Engine, redis_client: redis.Redis
) -> None:
    # When cycles run with auto_provision on but no SALVY_API_URL
    results = [
        dispatch.run_cycle(pool, redis_client, Broker(), period_seconds=60, salvy_configured=False)
        for _ in range(3)
    ]
    # Then no intent is recorded (none could ever settle), and ops are told once
    assert [r["dispatched"]["provision_chip"] for r in results] == [0, 0, 0]
    assert count(pool, sa.select(sa.func.count()).select_from(chips)) == 0
    (alert,) = alerts(pool)
    assert "SALVY_API_URL" in alert
    # And status and plan say why nothing is bought
    status = pool_status(pool, salvy_configured=False)
    assert status["compras"]["estado"] == "sem_salvy"
    assert "SALVY_API_URL not set" in status["compras"]["aviso"]
    plan, plan_status, _ = cycle.plan(pool, salvy_configured=False)
    assert plan.provision == 0 and plan_status["compras"] == status["compras"]


def test_a_redelivered_task_of_a_failed_purchase_does_not_buy(
    pool: sa.Engine, salvy: SalvyClient, standin: SalvyStandin
) -> None:
    # Given a purchase that failed (out of stock) and left no row
    standin.set_faults(out_of_stock=list(DEFAULT_STOCK))
    key = "redelivered-purchase"
    assert provision(pool, salvy, key)["status"] == "rejected"
    assert count(pool, sa.select(sa.func.count()).select_from(chips)) == 0
    # When stock is back and the same task is delivered again
    standin.set_faults(out_of_stock=[])
    again = provision(pool, salvy, key)
    # Then it buys nothing and records no intent
    assert again["status"] == "failed" and again["already"] is True
    assert standin.posts == 0
    assert count(pool, sa.select(sa.func.count()).select_from(chips)) == 0
