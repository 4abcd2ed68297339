"""The lifecycle races, with the interleaving forced instead of hoped for.

A barrier before the transaction (the concurrency tests of tests/db/test_lifecycle.py) only
starts threads together: they may still run one after the other, and such a test passes with no
locking at all. Here the test holds a lock each use case needs at a chosen point of its transaction, waits
until every competitor is parked on it (pg_stat_activity), then releases it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from orchestrator.errors import TransientError
from orchestrator.services import growth, promote, replacement
from orchestrator.store.schema import operations
from tests.factories import add_conversations, chip_row, conversations_on, make_chip, set_config
from tests.support.pg_waits import wait_until, waiting_backends

pytestmark = pytest.mark.db

#: Parks a use case just before it writes its operation row: after it took and changed its chips.
PARK_BEFORE_OPERATION_ROW = "LOCK TABLE orchestrator_operations IN EXCLUSIVE MODE"
#: Parks a promotion at its first statement that changes the active count's serialisation point.
PARK_ON_POOL_CONFIG = "SELECT 1 FROM pool_config FOR UPDATE"


class Calls:
    """Use-case calls on their own threads; results (or exceptions) by key."""

    def __init__(self) -> None:
        self.results: dict[str, object] = {}
        self.threads: list[threading.Thread] = []

    def start(self, key: str, call: Callable[[], dict]) -> None:
        def run() -> None:
            try:
                self.results[key] = call()
            except Exception as error:  # reported by the test's assertions
                self.results[key] = error

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> dict[str, object]:
        for thread in self.threads:
            thread.join(30)
        assert not any(t.is_alive() for t in self.threads)
        return self.results


def test_a_replacement_holding_the_only_ready_chip_makes_a_concurrent_one_retry_then_fall_back(
    clean_db: sa.Engine,
) -> None:
    # Given a low-trust active chip and a banned chip, 3 conversations each, a healthy active
    # chip, and a single ready chip
    low = make_chip(clean_db, "active", trust=30)
    banned = make_chip(clean_db, "banned")
    add_conversations(clean_db, low, 3)
    add_conversations(clean_db, banned, 3)
    healthy = make_chip(clean_db, "active", trust=90)
    ready = make_chip(clean_db, "ready", trust=95)
    blocker = clean_db.connect()
    blocker.begin()
    blocker.execute(sa.text(PARK_BEFORE_OPERATION_ROW))
    calls = Calls()
    try:
        # When the first replacement has promoted the ready chip and is parked before committing
        calls.start("low", lambda: replacement.replace_chip(clean_db, low, "low_trust"))
        wait_until(lambda: waiting_backends(clean_db) == 1)
        # And the second one runs meanwhile: the only ready chip is busy, not missing
        with pytest.raises(TransientError, match="held by another task"):
            replacement.replace_chip(clean_db, banned, "banned")
    finally:
        blocker.rollback()
        blocker.close()
    results = calls.join()
    # Then the first got the ready chip, and the second's retry takes SPEC's fallback
    second = replacement.replace_chip(clean_db, banned, "banned")
    assert results["low"]["status"] == "replaced", results
    assert results["low"]["replacement_id"] == ready
    assert (second["status"], second["target_id"]) == ("no_ready_chip", healthy), second
    with clean_db.connect() as conn:
        promoted = conn.execute(
            sa.select(sa.func.count()).where(operations.c.chip_destino_id == ready)
        ).scalar_one()
    assert promoted == 1
    assert chip_row(clean_db, ready).status == "active"
    assert (conversations_on(clean_db, ready), conversations_on(clean_db, healthy)) == (3, 3)
    assert conversations_on(clean_db, banned) == conversations_on(clean_db, low) == 0


def test_replacements_overlapping_on_five_ready_chips_use_each_once(clean_db: sa.Engine) -> None:
    # Given 12 low-trust active chips with 2 conversations each and 5 ready chips
    degraded = [make_chip(clean_db, "active", trust=20) for _ in range(12)]
    for chip in degraded:
        add_conversations(clean_db, chip, 2)
    ready = {make_chip(clean_db, "ready", trust=90 + i % 5) for i in range(5)}
    blocker = clean_db.connect()
    blocker.begin()
    blocker.execute(sa.text(PARK_BEFORE_OPERATION_ROW))
    calls = Calls()
    try:
        # When all 12 run at once, and those that took a ready chip are parked holding it
        for chip in degraded:
            calls.start(chip, lambda chip=chip: replacement.replace_chip(clean_db, chip))
        wait_until(lambda: waiting_backends(clean_db) == 5 and len(calls.results) == 7)
        # Then the 7 others were told "busy, retry" while all 5 were taken and uncommitted
        busy = [chip for chip, r in calls.results.items() if isinstance(r, TransientError)]
        assert len(busy) == 7, calls.results
    finally:
        blocker.rollback()
        blocker.close()
    results = calls.join()
    # And exactly 5 replacements, each with a different ready chip
    replaced = [r for r in results.values() if isinstance(r, dict) and r["status"] == "replaced"]
    assert len(replaced) == 5
    assert {r["replacement_id"] for r in replaced} == ready
    # And the retries of the 7 find no ready chip left: they keep serving and alert
    retried = [replacement.replace_chip(clean_db, chip) for chip in busy]
    assert {(r["status"], r["action"]) for r in retried} == {("no_ready_chip", "kept_serving")}
    with clean_db.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM chips WHERE status = 'active'")) == 12


def test_promotions_queued_on_the_pool_config_lock_stop_at_producao_min(
    clean_db: sa.Engine,
) -> None:
    # Given producao_min = producao_max = 3, no active chip, 8 ready chips
    set_config(clean_db, producao_min=3, producao_max=3)
    ready = [make_chip(clean_db, "ready") for _ in range(8)]
    blocker = clean_db.connect()
    blocker.begin()
    blocker.execute(sa.text(PARK_ON_POOL_CONFIG))
    calls = Calls()
    try:
        # When 8 promotions are all in flight at once, queued on the active count's lock
        for chip in ready:
            calls.start(chip, lambda chip=chip: promote.promote_ready_to_active(clean_db, chip))
        wait_until(lambda: waiting_backends(clean_db) == 8)
    finally:
        blocker.rollback()
        blocker.close()
    results = calls.join()
    # Then exactly 3 were promoted and 5 skipped: never above producao_min
    statuses = sorted(r["status"] for r in results.values())
    assert statuses == ["promoted"] * 3 + ["skipped"] * 5
    with clean_db.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM chips WHERE status = 'active'")) == 3


def test_banned_replacements_queued_on_the_pool_config_lock_never_exceed_producao_max(
    clean_db: sa.Engine,
) -> None:
    # Given producao_max = 4, two healthy active chips, five banned chips not yet handled (two
    # conversations each) and eight ready chips
    set_config(clean_db, producao_min=2, producao_max=4)
    for _ in range(2):
        make_chip(clean_db, "active")
    banned = [make_chip(clean_db, "banned") for _ in range(5)]
    for chip in banned:
        add_conversations(clean_db, chip, 2)
    ready = [make_chip(clean_db, "ready", trust=95) for _ in range(8)]
    blocker = clean_db.connect()
    blocker.begin()
    blocker.execute(sa.text(PARK_ON_POOL_CONFIG))
    calls = Calls()
    try:
        # When their five replacements are all queued on the active count's lock
        for chip in banned:
            calls.start(chip, lambda chip=chip: replacement.replace_chip(clean_db, chip))
        wait_until(lambda: waiting_backends(clean_db) == 5)
        # And another service promotes a ready chip meanwhile, with a plain UPDATE
        with clean_db.begin() as conn:
            conn.execute(
                sa.text("UPDATE chips SET status = 'active' WHERE id = :id"), {"id": ready[-1]}
            )
    finally:
        blocker.rollback()
        blocker.close()
    results = calls.join()
    # Then only one was swapped for a ready chip (2 + 1 + 1 = producao_max); the other four
    # moved their conversations to an active chip instead
    outcomes = sorted(
        (r["status"], r.get("action")) for r in results.values() if isinstance(r, dict)
    )
    assert outcomes == [("no_ready_chip", "conversations_moved")] * 4 + [("replaced", None)]
    with clean_db.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM chips WHERE status = 'active'")) == 4
    assert conversations_on(clean_db, banned[0]) == 0


def waiting_on_table(engine: sa.Engine, table: str) -> int:
    """Sessions waiting for a table-level lock on `table` (what PARK_BEFORE_OPERATION_ROW parks)."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'relation'"
                " AND relation = to_regclass(:table)"
            ),
            {"table": table},
        ).scalar_one()


def active_count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(sa.text("SELECT count(*) FROM chips WHERE status = 'active'"))


def promote_plainly(engine: sa.Engine, chips: list[str]) -> None:
    """Another service makes ready chips active with a plain UPDATE, no lock of ours."""
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE chips SET status = 'active' WHERE id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": chips},
        )


def test_banned_swaps_far_below_producao_max_run_side_by_side(clean_db: sa.Engine) -> None:
    # Given producao_max far above the two active chips, three banned chips with conversations
    # and five ready chips
    set_config(clean_db, producao_min=2, producao_max=100)
    for _ in range(2):
        make_chip(clean_db, "active")
    banned = [make_chip(clean_db, "banned") for _ in range(3)]
    for chip in banned:
        add_conversations(clean_db, chip, 2)
    for _ in range(5):
        make_chip(clean_db, "ready", trust=95)
    blocker = clean_db.connect()
    blocker.begin()
    blocker.execute(sa.text(PARK_BEFORE_OPERATION_ROW))
    calls = Calls()
    try:
        # When their three swaps run at once
        for chip in banned:
            calls.start(chip, lambda chip=chip: replacement.replace_chip(clean_db, chip))
        # Then all three have promoted their ready chip together, none queued on pool_config
        wait_until(lambda: waiting_on_table(clean_db, "orchestrator_operations") == 3)
    finally:
        blocker.rollback()
        blocker.close()
    results = calls.join()
    assert sorted(r["status"] for r in results.values()) == ["replaced"] * 3
    assert len({r["replacement_id"] for r in results.values()}) == 3
    assert active_count(clean_db) == 5


def test_exact_counts_wait_for_the_swaps_holding_slots_and_stop_at_producao_max(
    clean_db: sa.Engine,
) -> None:
    # Given producao_max = producao_min = 40 and 8 active chips (room for the slot path), three
    # banned chips, five ready chips for them, 29 others and two for promotions
    slots = growth.GROWTH_SLOTS
    set_config(clean_db, producao_min=40, producao_max=40)
    for _ in range(40 - 2 * slots):
        make_chip(clean_db, "active")
    banned = [make_chip(clean_db, "banned") for _ in range(3)]
    for _ in range(5):
        make_chip(clean_db, "ready", trust=95)
    others = [make_chip(clean_db, "ready", trust=88) for _ in range(29)]
    promoted = [make_chip(clean_db, "ready", trust=90) for _ in range(2)]
    blocker = clean_db.connect()
    blocker.begin()
    blocker.execute(sa.text(PARK_BEFORE_OPERATION_ROW))
    calls = Calls()
    try:
        # When the three swaps hold their slots, parked before committing
        for chip in banned:
            calls.start(chip, lambda chip=chip: replacement.replace_chip(clean_db, chip))
        wait_until(lambda: waiting_on_table(clean_db, "orchestrator_operations") == 3)
        # And another service makes 29 ready chips active meanwhile: 37 active, 3 in flight
        # (other services are not held to producao_max; they reach it exactly here)
        promote_plainly(clean_db, others)
        # And two promotions start: both must wait for the slot holders
        for chip in promoted:
            calls.start(chip, lambda chip=chip: promote.promote_ready_to_active(clean_db, chip))
        wait_until(lambda: waiting_backends(clean_db) == 5)
    finally:
        blocker.rollback()
        blocker.close()
    results = calls.join()
    # Then the swaps went through, and both promotions counted them: no room was left
    assert [results[chip]["status"] for chip in banned] == ["replaced"] * 3
    assert [results[chip]["status"] for chip in promoted] == ["skipped"] * 2
    assert active_count(clean_db) == 40


def test_a_swap_whose_count_rose_near_producao_max_retries_and_counts_exactly(
    clean_db: sa.Engine,
) -> None:
    # Given producao_max = 40, 8 active chips (room for the slot path), one banned chip and 25
    # ready chips
    slots = growth.GROWTH_SLOTS
    set_config(clean_db, producao_min=8, producao_max=40)
    for _ in range(40 - 2 * slots):
        make_chip(clean_db, "active")
    chip = make_chip(clean_db, "banned")
    ready = [make_chip(clean_db, "ready", trust=95) for _ in range(25)]
    holder = clean_db.connect()
    holder.begin()
    holder.execute(sa.text("SELECT 1 FROM chips WHERE id = :id FOR UPDATE"), {"id": chip})
    calls = Calls()
    try:
        # When the swap has taken a slot and waits for the chip's row
        calls.start("swap", lambda: replacement.replace_chip(clean_db, chip))
        wait_until(lambda: waiting_backends(clean_db) == 1)
        # And another service makes 20 ready chips active meanwhile (28 > 40 - slots)
        promote_plainly(clean_db, ready[-20:])
    finally:
        holder.rollback()
        holder.close()
    # Then the swap gives way (busy, retried) instead of trusting its first count
    (result,) = calls.join().values()
    assert isinstance(result, TransientError), result
    # And its retry counts exactly under pool_config and goes through
    assert replacement.replace_chip(clean_db, chip)["status"] == "replaced"
    assert active_count(clean_db) == 29


def test_a_banned_swap_finding_every_growth_slot_held_locks_nothing_then_counts_exactly(
    clean_db: sa.Engine,
) -> None:
    # Given a banned chip with 2 open conversations far below producao_max, a ready chip, and
    # another session holding every growth slot
    set_config(clean_db, producao_min=1, producao_max=100)
    chip = make_chip(clean_db, "banned")
    add_conversations(clean_db, chip, 2)
    ready = make_chip(clean_db, "ready", trust=95)
    holder = clean_db.connect()
    holder.begin()
    holder.execute(sa.text("SELECT slot FROM pool_growth_slots FOR UPDATE"))
    calls = Calls()
    try:
        # When the swap runs: its first statement finds no free slot, so it counts exactly and
        # waits for the slots
        calls.start("swap", lambda: replacement.replace_chip(clean_db, chip))
        wait_until(lambda: waiting_backends(clean_db) == 1)
        # Then it waits holding pool_config, and not the chip's row (lock order: pool_config,
        # slots, chips): another session can lock the chip without waiting
        with clean_db.connect() as other:
            with pytest.raises(sa.exc.DBAPIError, match="could not obtain lock"):
                other.execute(sa.text("SELECT 1 FROM pool_config FOR UPDATE NOWAIT"))
            other.rollback()
            locked = other.execute(
                sa.text("SELECT id FROM chips WHERE id = :id FOR UPDATE NOWAIT"), {"id": chip}
            ).all()
            other.rollback()
        assert len(locked) == 1
    finally:
        holder.rollback()
        holder.close()
    # And once the slots are free it swaps, exactly once
    (result,) = calls.join().values()
    assert isinstance(result, dict), result
    assert (result["status"], result["replacement_id"]) == ("replaced", ready)
    assert conversations_on(clean_db, ready) == 2
    assert chip_row(clean_db, chip).status == "banned"
