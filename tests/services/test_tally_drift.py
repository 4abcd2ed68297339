"""Counts that decide stay true when rows change without firing the tally's triggers.

Other services load chips under `session_replication_role = replica` (data imports, logical
replication), restore with triggers disabled, or disable a trigger: the cached counts then lie.
The cycle checks them against `chips` and corrects them before it plans; a promotion checks the
active count under its locks before deciding; ops are told once; `check` reports a drift.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from orchestrator.domain.pool import STATUSES
from orchestrator.ops import checker
from orchestrator.services import dispatch, promote, tally
from orchestrator.store import repository as repo
from orchestrator.store.schema import outbox
from tests.factories import make_chip, set_config
from tests.services.test_cycle import Broker

pytestmark = pytest.mark.db

#: Twelve active chips as another service's bulk load writes them: no trigger fires.
BULK_ACTIVE = """
INSERT INTO chips (telefone, ddd, status, trust_score, fase_warmup, evolution_connected,
                   ready_at, promoted_to_active_at)
SELECT '+5511' || lpad((random() * 1e9)::bigint::text, 9, '0') || g, 11, 'active', 90,
       'operacao', true, now() - interval '2 days', now() - interval '1 day'
  FROM generate_series(1, :n) AS g
"""


def bulk_load_active(engine: sa.Engine, n: int) -> None:
    """n active chips inserted under session_replication_role = replica (triggers off)."""
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        conn.execute(sa.text(BULK_ACTIVE), {"n": n})


def true_active(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM chips WHERE status = 'active'")).scalar()


def cached(engine: sa.Engine, status: str = "active") -> int:
    with engine.connect() as conn:
        return getattr(repo.status_counts(conn), status)


def drift_alerts(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        texts = conn.execute(sa.select(outbox.c.texto).where(outbox.c.canal == "alertas"))
        return [t for t in texts.scalars() if "Contagem de chips" in t]


def run_promotions(engine: sa.Engine, broker: Broker) -> list[dict]:
    """Run the promotions the cycle dispatched, as workers would."""
    return [
        promote.promote_ready_to_active(engine, args[0])
        for name, args, _ in broker.sent
        if name == "orchestrator.promote_ready_to_active"
    ]


@pytest.fixture
def full_pool_loaded_without_triggers(clean_db: sa.Engine) -> sa.Engine:
    """producao_min = producao_max = 12, 12 active chips bulk-loaded, 5 fit ready chips."""
    set_config(clean_db, producao_min=12, producao_max=12, ready_min=0, warmup_buffer=0)
    bulk_load_active(clean_db, 12)
    for _ in range(5):
        make_chip(clean_db, "ready", trust=95)
    assert cached(clean_db) == 0 and true_active(clean_db) == 12  # the tally lies
    return clean_db


def test_a_cycle_after_a_bulk_load_corrects_the_count_and_promotes_nobody_past_the_max(
    full_pool_loaded_without_triggers: sa.Engine, redis_client: redis.Redis
) -> None:
    engine = full_pool_loaded_without_triggers
    broker = Broker()
    # When a cycle runs and its promotions are carried out
    result = dispatch.run_cycle(engine, redis_client, broker, period_seconds=60)
    outcomes = run_promotions(engine, broker)
    # Then the count was corrected before planning, nobody was promoted, the pool is full not critical
    assert result["counts_corrected"]["active"] == [0, 12]
    assert result["dispatched"]["promote_ready_to_active"] == 0 and outcomes == []
    assert result["saude"] != "critico"
    assert true_active(engine) == 12 and cached(engine) == 12
    # And ops were told once
    assert len(drift_alerts(engine)) == 1


def test_a_promotion_sent_from_outside_the_cycle_checks_the_true_count_first(
    full_pool_loaded_without_triggers: sa.Engine,
) -> None:
    engine = full_pool_loaded_without_triggers
    with engine.connect() as conn:
        ready = conn.execute(sa.text("SELECT id::text FROM chips WHERE status = 'ready'")).scalars()
        ready_ids = list(ready)
    # When each ready chip is promoted directly (Flower, another service, a late task)
    outcomes = [promote.promote_ready_to_active(engine, chip) for chip in ready_ids]
    # Then none passes producao_max: the first corrected the count, every one skipped
    assert [o["status"] for o in outcomes] == ["skipped"] * 5
    assert true_active(engine) == 12 and cached(engine) == 12


def test_a_plain_delete_after_a_bulk_load_never_leaves_a_negative_count(
    clean_db: sa.Engine, redis_client: redis.Redis
) -> None:
    # Given 12 chips loaded without triggers, then deleted with a plain DELETE (triggers fire)
    set_config(clean_db, producao_min=0, ready_min=0, warmup_buffer=0)
    bulk_load_active(clean_db, 12)
    with clean_db.begin() as conn:
        conn.execute(sa.text("DELETE FROM chips WHERE status = 'active'"))
    assert cached(clean_db) == -12
    # When a cycle runs
    result = dispatch.run_cycle(clean_db, redis_client, Broker(), period_seconds=60)
    # Then the count is zero again
    assert result["counts_corrected"] == {"active": [-12, 0]}
    assert cached(clean_db) == 0


def test_a_disabled_trigger_drift_is_found_within_a_few_cycles_and_alerted_once(
    clean_db: sa.Engine, redis_client: redis.Redis
) -> None:
    # Given warming chips whose move to degraded fired no trigger (the trigger was disabled)
    set_config(clean_db, producao_min=0, ready_min=0, warmup_buffer=0)
    moved = [make_chip(clean_db, "warming", trust=10) for _ in range(3)]
    with clean_db.begin() as conn:
        conn.execute(sa.text("ALTER TABLE chips DISABLE TRIGGER chip_status_tally_update"))
        try:
            conn.execute(
                sa.text(
                    "UPDATE chips SET status = 'degraded' WHERE id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": moved},
            )
        finally:
            conn.execute(sa.text("ALTER TABLE chips ENABLE TRIGGER chip_status_tally_update"))
    assert (cached(clean_db, "warming"), cached(clean_db, "degraded")) == (3, 0)
    # When cycles run (each checks active and a rotation of the other statuses)
    corrected: dict = {}
    for _ in range(len(STATUSES)):
        result = dispatch.run_cycle(clean_db, redis_client, Broker(), period_seconds=60)
        corrected |= result["counts_corrected"]
    # Then both counts were corrected, and ops were told once (cool-down)
    assert corrected == {"warming": [3, 0], "degraded": [0, 3]}
    assert (cached(clean_db, "warming"), cached(clean_db, "degraded")) == (0, 3)
    assert len(drift_alerts(clean_db)) == 1


def test_check_reports_a_drift_until_a_cycle_corrects_it(
    clean_db: sa.Engine, redis_client: redis.Redis
) -> None:
    set_config(clean_db, producao_min=0, ready_min=0, warmup_buffer=0)
    bulk_load_active(clean_db, 4)
    kinds = [v.kind for v in checker.find_violations(clean_db)]
    assert "status_tally_drift" in kinds
    dispatch.run_cycle(clean_db, redis_client, Broker(), period_seconds=60)
    assert "status_tally_drift" not in [v.kind for v in checker.find_violations(clean_db)]


@pytest.fixture
def writer_in_flight(clean_db: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that moved a ready chip to active (its tally delta written), not committed."""
    chip = make_chip(clean_db, "ready", trust=95)
    conn = clean_db.connect()
    conn.begin()
    conn.execute(sa.text("UPDATE chips SET status = 'active' WHERE id = :id"), {"id": chip})
    yield conn
    conn.close()


def test_a_correction_never_counts_a_concurrent_writer_twice(
    clean_db: sa.Engine, writer_in_flight: sa.Connection
) -> None:
    # Given a real drift (4 active chips loaded without triggers) and a writer in flight
    bulk_load_active(clean_db, 4)
    # When the count is corrected while the writer has not committed, then the writer commits
    with clean_db.begin() as conn:
        drift = tally.correct(conn, ["active", "ready"])
    writer_in_flight.commit()
    # Then the correction saw neither the writer's change nor its delta: after both, exact
    assert drift == {"active": (0, 4)}
    assert cached(clean_db, "active") == true_active(clean_db) == 5
    assert cached(clean_db, "ready") == 0


def test_a_correction_waits_for_nobody_and_nobody_waits_for_it(
    clean_db: sa.Engine, writer_in_flight: sa.Connection
) -> None:
    # Given a writer holding its row and tally delta uncommitted, a correction runs beside it
    done = threading.Event()

    def correct() -> None:
        with clean_db.begin() as conn:
            tally.correct(conn, ["active", "ready"])
        done.set()

    worker = threading.Thread(target=correct)
    worker.start()
    worker.join(timeout=30)
    # Then it finished while the writer still holds its transaction
    assert done.is_set()
    writer_in_flight.commit()
    assert cached(clean_db, "active") == true_active(clean_db) == 1
