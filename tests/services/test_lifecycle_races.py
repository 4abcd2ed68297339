"""Stale plans, fitness, busy ready chips, lock order and timeouts, on the real PostgreSQL.

Each race is forced: the test's own connection holds the row lock (or installs a trigger) that
puts the use case at the interleaving it claims to survive; nothing here hopes for timing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
import redis
import sqlalchemy as sa

from orchestrator.domain.pool import PoolConfig
from orchestrator.errors import Rejected, TransientError
from orchestrator.services import cycle, promote, replacement
from orchestrator.services import dispatch as runner  # kept for the merge of the scale branch
from orchestrator.store import db
from orchestrator.store import repository as repo
from orchestrator.store.schema import chips, operations, outbox
from tests.factories import add_conversations, chip_row, conversations_on, make_chip, set_config
from tests.support.pg_waits import wait_until, waiting_backends

pytestmark = pytest.mark.db

#: The replace task's soft time limit (tasks/chips.py): a lock wait must end well before it.
SOFT_TIME_LIMIT = 20
#: A disconnection older than the default 30-minute grace period.
LONG_AGO = timedelta(minutes=45)


# --- helpers -------------------------------------------------------------------------------


def count(engine: sa.Engine, sql: str, **params: object) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


def n_operations(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(operations)).scalar_one()


def texts(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(outbox.c.texto)).scalars())


def state(engine: sa.Engine) -> list[tuple]:
    """Everything a use case may change: chips, conversations, operations, outbox, alerts."""
    with engine.connect() as conn:
        return [
            tuple(conn.execute(sa.text(sql)).all())
            for sql in (
                "SELECT id, status, degraded_at, promoted_to_active_at FROM chips ORDER BY id",
                "SELECT id, chip_id FROM conversation_chips ORDER BY id",
                "SELECT count(*) FROM orchestrator_operations",
                "SELECT count(*) FROM notification_outbox",
                "SELECT count(*) FROM alert_state",
            )
        ]


@pytest.fixture
def hold(clean_db: sa.Engine) -> Iterator[Callable[[str], None]]:
    """hold(sql): run sql on the test's own connection, inside a transaction kept open."""
    conn = clean_db.connect()
    conn.begin()

    def run(sql: str, **params: object) -> None:
        conn.execute(sa.text(sql), params)

    run.release = conn.rollback  # type: ignore[attr-defined]
    run.commit = conn.commit  # type: ignore[attr-defined]
    yield run
    conn.rollback()
    conn.close()


def in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, dict]:
    """Run fn in a thread; its result or exception lands in the returned dict."""
    out: dict = {}

    def body() -> None:
        try:
            out["result"] = fn()
        except Exception as error:  # the test inspects it
            out["error"] = error

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


class Broker:
    """Collects what the cycle dispatches, so the test can run it later (a queued task)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list, str | None]] = []

    def __call__(self, name: str, args: list, task_id: str | None) -> None:
        self.sent.append((name, args, task_id))


# --- item 3: stale plans -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "degraded", "recovery"),
    [
        ("low_trust", {"trust": 40}, "UPDATE chips SET trust_score = 90 WHERE id = :id"),
        (
            "disconnected",
            {"evolution_connected": False},
            "UPDATE chips SET evolution_connected = true WHERE id = :id",
        ),
    ],
)
def test_a_chip_that_recovered_before_its_queued_replace_ran_is_left_alone(
    clean_db: sa.Engine, reason: str, degraded: dict, recovery: str
) -> None:
    # Given an active chip planned for replacement, with conversations and a ready chip waiting
    chip = make_chip(
        clean_db, "active", evolution_disconnected_at=sa.func.now() - LONG_AGO, **degraded
    )
    for _ in range(3):  # a healthy majority: no storm
        make_chip(clean_db, "active")
    add_conversations(clean_db, chip, 3)
    ready = make_chip(clean_db, "ready", trust=95)
    assert [r.reason for r in cycle.plan(clean_db)[0].replace] == [reason]
    # And it recovers (another service writes trust / the gateway reconnects) before the task runs
    with clean_db.begin() as conn:
        conn.execute(sa.text(recovery), {"id": chip})
    before = state(clean_db)

    # When the queued replace runs
    result = replacement.replace_chip(clean_db, chip, reason)

    # Then it is skipped as recovered and nothing changed
    assert result == {"status": "skipped", "chip_id": chip, "reason": "recovered"}
    assert state(clean_db) == before
    assert chip_row(clean_db, chip).status == "active"
    assert chip_row(clean_db, ready).status == "ready"
    assert conversations_on(clean_db, chip) == 3
    assert n_operations(clean_db) == 0


def test_a_stale_cycle_plan_replaces_no_recovered_chip(
    clean_db: sa.Engine, redis_client: redis.Redis
) -> None:
    # Given a pool where the cycle plans 4 replacements (2 low trust, 2 disconnected)
    set_config(clean_db, producao_min=8, producao_max=12, auto_provision=False)
    for _ in range(6):
        make_chip(clean_db, "active", trust=95)
    low = [make_chip(clean_db, "active", trust=30) for _ in range(2)]
    off = [
        make_chip(
            clean_db,
            "active",
            evolution_connected=False,
            evolution_disconnected_at=sa.func.now() - LONG_AGO,
        )
        for _ in range(2)
    ]
    for _ in range(4):
        make_chip(clean_db, "ready", trust=95)
    broker = Broker()
    runner.run_cycle(clean_db, redis_client, broker, period_seconds=60)
    planned = [args for name, args, _ in broker.sent if name == runner.REPLACE]
    assert sorted(planned) == sorted(
        [[c, "low_trust"] for c in low] + [[c, "disconnected"] for c in off]
    )
    # And every one of them recovers while the tasks wait in the queue
    with clean_db.begin() as conn:
        conn.execute(
            sa.text("UPDATE chips SET trust_score = 90 WHERE id = ANY(:ids)"), {"ids": low}
        )
        conn.execute(
            sa.text("UPDATE chips SET evolution_connected = true WHERE id = ANY(:ids)"),
            {"ids": off},
        )

    # When the queued replaces run
    outcomes = []
    for args in planned:
        try:
            outcomes.append(replacement.replace_chip(clean_db, *args)["status"])
        except Exception as error:  # counted, then asserted below
            outcomes.append(type(error).__name__)

    # Then no recovered chip was swapped out
    replaced = outcomes.count("replaced")
    print(f"\nreplacements of recovered chips: {replaced} of {len(planned)}; outcomes {outcomes}")
    assert replaced == 0
    assert outcomes == ["skipped"] * 4
    assert count(clean_db, "SELECT count(*) FROM chips WHERE status = 'active'") == 10
    assert count(clean_db, "SELECT count(*) FROM chips WHERE status = 'ready'") == 4


def test_a_storm_at_replace_time_holds_a_disconnection_replace(clean_db: sa.Engine) -> None:
    # Given 4 active chips, one disconnected past the grace period: the cycle plans its replace
    set_config(clean_db, producao_min=4)
    chip = make_chip(
        clean_db,
        "active",
        evolution_connected=False,
        evolution_disconnected_at=sa.func.now() - LONG_AGO,
    )
    others = [make_chip(clean_db, "active") for _ in range(3)]
    make_chip(clean_db, "ready", trust=95)
    the_plan = cycle.plan(clean_db)[0]
    assert not the_plan.storm and [r.chip_id for r in the_plan.replace] == [chip]
    # And the gateway then drops most of the pool before the task runs
    with clean_db.begin() as conn:
        conn.execute(
            sa.text("UPDATE chips SET evolution_connected = false WHERE id = ANY(:ids)"),
            {"ids": others[:2]},
        )
    before = state(clean_db)

    result = replacement.replace_chip(clean_db, chip, "disconnected")

    assert result == {"status": "skipped", "chip_id": chip, "reason": "storm"}
    assert state(clean_db) == before


def test_the_storm_brake_does_not_hold_a_low_trust_replace(clean_db: sa.Engine) -> None:
    low = make_chip(clean_db, "active", trust=30, evolution_connected=False)
    for _ in range(3):
        make_chip(clean_db, "active", evolution_connected=False)
    make_chip(clean_db, "ready", trust=95)
    assert replacement.replace_chip(clean_db, low, "low_trust")["status"] == "replaced"


@pytest.mark.parametrize("reason", [None, "pedido do cliente", "banned"])
def test_a_replace_ops_ask_for_is_honoured_for_a_healthy_chip(
    clean_db: sa.Engine, reason: str | None
) -> None:
    healthy = make_chip(clean_db, "active", trust=95)
    add_conversations(clean_db, healthy, 2)
    ready = make_chip(clean_db, "ready", trust=95)
    result = replacement.replace_chip(clean_db, healthy, reason)
    assert (result["status"], result["replacement_id"]) == ("replaced", ready)
    assert conversations_on(clean_db, ready) == 2


# --- item 4: fit to serve ------------------------------------------------------------------


def test_a_disconnected_ready_chip_with_the_highest_trust_never_takes_a_banned_chips_conversations(
    clean_db: sa.Engine,
) -> None:
    banned = make_chip(clean_db, "banned")
    add_conversations(clean_db, banned, 4)
    offline = make_chip(clean_db, "ready", trust=99, evolution_connected=False)
    fit = make_chip(clean_db, "ready", trust=90)

    result = replacement.replace_chip(clean_db, banned, "banned")

    assert result["replacement_id"] == fit
    assert conversations_on(clean_db, fit) == 4
    assert (chip_row(clean_db, offline).status, conversations_on(clean_db, offline)) == ("ready", 0)


def test_with_only_unfit_ready_chips_a_replace_finds_no_ready_chip(clean_db: sa.Engine) -> None:
    low = make_chip(clean_db, "active", trust=30)
    make_chip(clean_db, "ready", trust=99, evolution_connected=False)
    make_chip(clean_db, "ready", trust=84)
    result = replacement.replace_chip(clean_db, low, "low_trust")
    assert (result["status"], result["action"]) == ("no_ready_chip", "kept_serving")


@pytest.mark.parametrize(
    "unfit", [{"evolution_connected": False, "trust": 99}, {"trust": 84}], ids=["offline", "low"]
)
def test_promotion_refuses_a_ready_chip_not_fit_to_serve(clean_db: sa.Engine, unfit: dict) -> None:
    set_config(clean_db, producao_min=3)
    chip = make_chip(clean_db, "ready", **unfit)
    before = state(clean_db)
    with pytest.raises(Rejected) as info:
        promote.promote_ready_to_active(clean_db, chip)
    assert info.value.code == "not_fit"
    assert state(clean_db) == before


def test_the_plan_promotes_and_ranks_only_ready_chips_fit_to_serve(clean_db: sa.Engine) -> None:
    set_config(clean_db, producao_min=3, producao_max=5)
    make_chip(clean_db, "active")
    make_chip(clean_db, "ready", trust=99, evolution_connected=False)
    make_chip(clean_db, "ready", trust=84)
    fit = make_chip(clean_db, "ready", trust=90)
    assert cycle.plan(clean_db)[0].promote_active == (fit,)


# --- item 5: busy is not empty -------------------------------------------------------------


def test_a_banned_chip_whose_only_ready_chip_is_row_locked_retries_instead_of_falling_back(
    clean_db: sa.Engine, hold
) -> None:
    # Given a banned chip with conversations, a healthy active chip and one fit ready chip
    banned = make_chip(clean_db, "banned")
    add_conversations(clean_db, banned, 3)
    healthy = make_chip(clean_db, "active", trust=95)
    ready = make_chip(clean_db, "ready", trust=95)
    # And another task holds the ready chip's row
    hold("SELECT 1 FROM chips WHERE id = :id FOR UPDATE", id=ready)
    before = state(clean_db)

    # When the banned chip is replaced
    with pytest.raises(TransientError) as info:
        replacement.replace_chip(clean_db, banned, "banned")

    # Then it asks for a quick retry and takes no fallback: nothing moved, nothing alerted
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 1
    assert state(clean_db) == before
    assert conversations_on(clean_db, banned) == 3 and conversations_on(clean_db, healthy) == 0
    assert chip_row(clean_db, banned).degraded_at is None
    assert not any("ready" in t.lower() for t in texts(clean_db))
    # And once the other task lets go, the retry takes that ready chip
    hold.release()
    result = replacement.replace_chip(clean_db, banned, "banned")
    assert (result["status"], result["replacement_id"]) == ("replaced", ready)
    assert conversations_on(clean_db, ready) == 3


def test_a_ready_chip_vetoed_by_another_tasks_redis_lock_is_busy_not_missing(
    clean_db: sa.Engine,
) -> None:
    low = make_chip(clean_db, "active", trust=30)
    ready = make_chip(clean_db, "ready", trust=95)
    before = state(clean_db)
    with pytest.raises(TransientError):
        replacement.replace_chip(clean_db, low, "low_trust", claim=lambda _: False)
    assert state(clean_db) == before  # no "sem chip ready" alert either
    result = replacement.replace_chip(clean_db, low, "low_trust", claim=lambda _: True)
    assert result["replacement_id"] == ready


# --- item 6: lock order, timeouts, compare-and-set -----------------------------------------


def test_a_banned_replace_and_a_late_promote_of_the_same_chip_never_deadlock(
    clean_db: sa.Engine, hold
) -> None:
    # Given a banned chip (a late promote for it is still queued) and a ready chip
    set_config(clean_db, producao_min=5)
    banned = make_chip(clean_db, "banned")
    add_conversations(clean_db, banned, 2)
    ready = make_chip(clean_db, "ready", trust=95)
    # And the banned chip's row is briefly held elsewhere, so both tasks queue up behind it
    hold("SELECT 1 FROM chips WHERE id = :id FOR UPDATE", id=banned)
    replace, replaced = in_thread(lambda: replacement.replace_chip(clean_db, banned, "banned"))
    wait_until(lambda: waiting_backends(clean_db) == 1)
    promoting, promoted = in_thread(lambda: promote.promote_ready_to_active(clean_db, banned))
    wait_until(lambda: waiting_backends(clean_db) == 2)

    # When the row is released
    hold.release()
    replace.join(30)
    promoting.join(30)

    # Then both finish cleanly (one lock order: pool_config, then chips): no deadlock retry
    assert "error" not in replaced, replaced
    assert replaced["result"]["replacement_id"] == ready
    assert isinstance(promoted.get("error"), Rejected), promoted
    assert promoted["error"].code == "wrong_state"


def test_a_chip_banned_between_the_status_read_and_the_row_lock_is_retried_in_lock_order(
    clean_db: sa.Engine, hold
) -> None:
    # Given an active chip that another service is banning right now (row locked, not committed)
    chip = make_chip(clean_db, "active")
    add_conversations(clean_db, chip, 2)
    ready = make_chip(clean_db, "ready", trust=95)
    hold("UPDATE chips SET status = 'banned' WHERE id = :id", id=chip)
    # When its replace reads "active" (no pool_config lock needed), then waits for the row
    replace, out = in_thread(lambda: replacement.replace_chip(clean_db, chip, "banned"))
    wait_until(lambda: waiting_backends(clean_db) == 1)
    hold.commit()
    replace.join(30)
    # Then, finding it banned, it does not lock pool_config after the chip: it asks for a retry
    assert isinstance(out.get("error"), TransientError), out
    assert conversations_on(clean_db, chip) == 2
    # And the retry takes the locks in order and replaces it
    result = replacement.replace_chip(clean_db, chip, "banned")
    assert (result["replacement_id"], result["chip_status"]) == (ready, "banned")


def test_every_connection_gives_up_on_a_lock_before_the_tasks_soft_time_limit(
    engine: sa.Engine,
) -> None:
    with engine.connect() as conn:
        lock_ms = conn.execute(
            sa.text("SELECT setting::int FROM pg_settings WHERE name = 'lock_timeout'")
        ).scalar_one()
        stmt_ms = conn.execute(
            sa.text("SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'")
        ).scalar_one()
    assert 0 < lock_ms < stmt_ms < SOFT_TIME_LIMIT * 1000


def test_a_lock_wait_longer_than_lock_timeout_becomes_a_retry(clean_db: sa.Engine, hold) -> None:
    # Given the chip's row held by another transaction until the task's soft time limit
    low = make_chip(clean_db, "active", trust=30)
    make_chip(clean_db, "ready", trust=95)
    hold("SELECT 1 FROM chips WHERE id = :id FOR UPDATE", id=low)
    timer = threading.Timer(SOFT_TIME_LIMIT, hold.release)
    timer.start()
    try:
        # When the replace waits for it, Then the wait ends as a retryable error, not a kill
        with pytest.raises(TransientError, match="lock"):
            replacement.replace_chip(clean_db, low, "low_trust")
    finally:
        timer.cancel()
    assert chip_row(clean_db, low).status == "active"


@pytest.fixture
def veto_updates(clean_db: sa.Engine) -> Iterator[Callable[[str], None]]:
    """veto(chip_id): a trigger that silently drops every UPDATE of that chip's row.

    It stands in for a row changed between our read and our compare-and-set: the UPDATE finds
    nothing to update, so its RETURNING is empty.
    """

    def veto(chip_id: str) -> None:
        with clean_db.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE OR REPLACE FUNCTION test_veto() RETURNS trigger LANGUAGE plpgsql AS"
                    f" $$ BEGIN IF OLD.id = '{chip_id}' THEN RETURN NULL; END IF; RETURN NEW; END $$;"
                    " CREATE TRIGGER zz_test_veto BEFORE UPDATE ON chips"
                    " FOR EACH ROW EXECUTE FUNCTION test_veto()"
                )
            )

    yield veto
    with clean_db.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER IF EXISTS zz_test_veto ON chips"))
        conn.execute(sa.text("DROP FUNCTION IF EXISTS test_veto()"))


def _replace_low(engine: sa.Engine) -> tuple[str, Callable[[], object]]:
    chip = make_chip(engine, "active", trust=30)
    add_conversations(engine, chip, 2)
    make_chip(engine, "ready", trust=95)
    return chip, lambda: replacement.replace_chip(engine, chip, "low_trust")


def _banned_fallback(engine: sa.Engine) -> tuple[str, Callable[[], object]]:
    chip = make_chip(engine, "banned")
    add_conversations(engine, chip, 2)
    make_chip(engine, "active", trust=95)
    return chip, lambda: replacement.replace_chip(engine, chip, "banned")


def _banned_nowhere(engine: sa.Engine) -> tuple[str, Callable[[], object]]:
    chip = make_chip(engine, "active")
    add_conversations(engine, chip, 2)
    return chip, lambda: replacement.replace_chip(engine, chip, "banned")


def _promote_ready(engine: sa.Engine) -> tuple[str, Callable[[], object]]:
    chip = make_chip(engine, "warming", trust=90)
    return chip, lambda: promote.promote_warming_to_ready(engine, chip)


def _promote_active(engine: sa.Engine) -> tuple[str, Callable[[], object]]:
    set_config(engine, producao_min=3)
    chip = make_chip(engine, "ready", trust=95)
    return chip, lambda: promote.promote_ready_to_active(engine, chip)


@pytest.mark.parametrize(
    "setup", [_replace_low, _banned_fallback, _banned_nowhere, _promote_ready, _promote_active]
)
def test_a_compare_and_set_that_finds_nothing_is_a_conflict_and_changes_nothing(
    clean_db: sa.Engine, veto_updates, setup: Callable
) -> None:
    chip, run = setup(clean_db)
    veto_updates(chip)
    before = state(clean_db)
    with pytest.raises(Rejected) as info:
        run()
    assert info.value.code == "conflict"
    assert state(clean_db) == before


def test_database_timeouts_are_translated_into_transient_errors(clean_db: sa.Engine) -> None:
    with pytest.raises(TransientError, match="timed out"), db.transaction(clean_db) as conn:
        conn.execute(sa.text("SET LOCAL statement_timeout = 50"))
        conn.execute(sa.text("SELECT pg_sleep(1)"))


def test_the_fit_ready_ranking_is_served_by_its_partial_index(clean_db: sa.Engine) -> None:
    # Given a large pool, mostly active, with some ready chips (some disconnected)
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO chips (telefone, ddd, status, trust_score, evolution_connected,"
                " ready_at) SELECT '+5521' || lpad(g::text, 9, '0'), 21,"
                " CASE WHEN g % 100 = 0 THEN 'ready' ELSE 'active' END, 50 + g % 50,"
                " g % 300 <> 0, now() FROM generate_series(1, 20000) g"
            )
        )
        conn.execute(sa.text("ANALYZE chips"))
    config = PoolConfig()
    stmt = (
        sa.select(chips.c.id)
        .where(*repo.fit_ready_clauses(config))
        .order_by(chips.c.trust_score.desc(), chips.c.ready_at)
        .limit(1)
    )
    sql = str(stmt.compile(clean_db, compile_kwargs={"literal_binds": True}))
    with clean_db.connect() as conn:
        explained = "\n".join(conn.execute(sa.text("EXPLAIN " + sql)).scalars())
        indexes = set(
            conn.execute(
                sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'chips'")
            ).scalars()
        )
    assert "idx_chips_ready_fit" in explained, explained
    assert "idx_chips_ready_best" not in indexes
