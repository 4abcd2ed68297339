"""Stranded-chip notes: the cycle looks only at chips the triggers noted (plus a backstop slice).

A chip that leaves `active`, and a chip gaining an open conversation while not active, must be
noted by whoever writes; a note may go only once its chip holds no open row while not active,
including rows from transactions still in flight. Races are forced with held locks.
"""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa

from orchestrator.ops import checker
from orchestrator.services import cycle
from orchestrator.store import repository as repo
from tests.factories import add_conversations, make_chip
from tests.support.pg_waits import wait_until, waiting_backends

pytestmark = pytest.mark.db


def noted(engine: sa.Engine) -> list[str]:
    """The noted chips holding stranded rows, as the cycle reads them."""
    with engine.connect() as conn:
        return repo.noted_stranded(conn, 10_000)[0]


def notes(engine: sa.Engine) -> list[str]:
    """Every note's chip id."""
    with engine.connect() as conn:
        return sorted(
            conn.execute(sa.text("SELECT chip_id::text FROM stranded_chip_events")).scalars()
        )


def unnoted(engine: sa.Engine) -> list[tuple[str, str | None]]:
    """The checker's stranded_unnoted violations."""
    found = checker.find_violations(engine)
    return [(v.kind, v.chip_id) for v in found if v.kind == "stranded_unnoted"]


def run(engine: sa.Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def insert_row(conn: sa.Connection, chip: str, conversation: str, active: bool = True) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO conversation_chips (conversation_id, chip_id, active)"
            " VALUES (:c, :chip, :active)"
        ),
        {"c": conversation, "chip": chip, "active": active},
    )


def tidy_after_plan(engine: sa.Engine) -> dict:
    """One cycle's read side and tidy, without dispatching anything."""
    *_, sweep = cycle.read_plan(engine, trust=False)
    return cycle.tidy(engine, sweep)


def test_open_rows_written_onto_chips_that_do_not_serve_are_noted(clean_db: sa.Engine) -> None:
    # Given an active chip and one chip of every status that does not serve
    serving = make_chip(clean_db, "active")
    idle = {s: make_chip(clean_db, s) for s in ("degraded", "cancelled", "ready", "warming")}
    with clean_db.begin() as conn:
        insert_row(conn, idle["warming"], "closed", active=False)
    add_conversations(clean_db, serving, 2)
    assert notes(clean_db) == []
    # When another service inserts onto two of them in one statement, moves a row onto the
    # third and reopens a closed row on the fourth
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO conversation_chips (conversation_id, chip_id)"
                " VALUES ('a', :d), ('b', :c), ('c', :s)"
            ),
            {"d": idle["degraded"], "c": idle["cancelled"], "s": serving},
        )
    run(
        clean_db,
        "UPDATE conversation_chips SET chip_id = :ready WHERE conversation_id = 'c'",
        ready=idle["ready"],
    )
    run(
        clean_db,
        "UPDATE conversation_chips SET active = true WHERE conversation_id = 'closed'",
    )
    # Then each of the four is noted once, the serving chip never
    assert notes(clean_db) == sorted(idle.values())
    assert noted(clean_db) == sorted(idle.values())
    assert unnoted(clean_db) == []


def test_a_chip_leaving_active_is_noted_and_its_note_settled_once_its_rows_moved(
    clean_db: sa.Engine,
) -> None:
    # Given an active chip with open conversations, and another active chip
    chip = make_chip(clean_db, "active")
    make_chip(clean_db, "active")
    add_conversations(clean_db, chip, 3)
    # When another service degrades it with a plain UPDATE
    run(clean_db, "UPDATE chips SET status = 'degraded' WHERE id = :id", id=chip)
    # Then it is noted; a cycle keeps the note while the rows are there
    assert noted(clean_db) == [chip]
    assert tidy_after_plan(clean_db)["notes_settled"] == 0
    # And once its conversations moved, the next cycle settles the note
    from orchestrator.services import conversations

    assert conversations.migrate_conversations(clean_db, chip)["status"] == "migrated"
    assert tidy_after_plan(clean_db)["notes_settled"] == 1
    assert notes(clean_db) == []


def test_a_router_insert_in_flight_when_its_chip_leaves_active_keeps_the_note_until_it_lands(
    clean_db: sa.Engine,
) -> None:
    # Given an active chip, and a router that inserted a conversation on it from a stale read and
    # has not committed (it saw the chip active: it notes nothing)
    chip = make_chip(clean_db, "active")
    router = clean_db.connect()
    router.begin()
    insert_row(router, chip, "late")
    try:
        # When another service degrades the chip (it waits for nobody) and a cycle runs
        with clean_db.begin() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '1s'"))
            conn.execute(
                sa.text("UPDATE chips SET status = 'degraded' WHERE id = :id"), {"id": chip}
            )
        assert noted(clean_db) == []  # the row is not visible yet
        assert tidy_after_plan(clean_db)["notes_settled"] == 0
        # Then the note survived the cycle (the router's KEY SHARE made it skip the chip)
        assert notes(clean_db) == [chip]
        router.commit()
    finally:
        router.close()
    # And the next cycle finds the row the router landed
    assert noted(clean_db) == [chip]


def test_a_reopen_in_flight_when_its_chip_leaves_active_keeps_the_note_until_it_lands(
    clean_db: sa.Engine,
) -> None:
    # Given an active chip with a closed conversation a router reopens and has not committed
    # (no foreign-key check on a reopen: the trigger's own KEY SHARE covers it)
    chip = make_chip(clean_db, "active")
    with clean_db.begin() as conn:
        insert_row(conn, chip, "old", active=False)
    router = clean_db.connect()
    router.begin()
    router.execute(
        sa.text("UPDATE conversation_chips SET active = true WHERE conversation_id = 'old'")
    )
    try:
        # When the chip is banned meanwhile and a cycle runs
        run(clean_db, "UPDATE chips SET status = 'banned' WHERE id = :id", id=chip)
        tidy_after_plan(clean_db)
        assert notes(clean_db) == [chip]
        router.commit()
    finally:
        router.close()
    # Then the reopened row is found
    assert noted(clean_db) == [chip]


def test_a_router_reading_from_an_older_snapshot_notes_what_it_writes(clean_db: sa.Engine) -> None:
    # Given a router in REPEATABLE READ that took its snapshot while the chip was active
    chip = make_chip(clean_db, "active")
    router = clean_db.connect().execution_options(isolation_level="REPEATABLE READ")
    router.begin()
    assert (
        router.execute(
            sa.text("SELECT status FROM chips WHERE id = :id"), {"id": chip}
        ).scalar_one()
        == "active"
    )
    try:
        # When the chip is degraded, a cycle settles its note (no rows on it yet), and then the
        # router inserts from its old snapshot and commits
        run(clean_db, "UPDATE chips SET status = 'degraded' WHERE id = :id", id=chip)
        assert tidy_after_plan(clean_db)["notes_settled"] == 1
        insert_row(router, chip, "stale")
        router.commit()
    finally:
        router.close()
    # Then its own note makes the next cycle find the row
    assert noted(clean_db) == [chip]


def test_the_chip_changing_status_first_then_the_router_writing_is_noted_either_way(
    clean_db: sa.Engine,
) -> None:
    # Given a chip being degraded by a transaction still open
    chip = make_chip(clean_db, "active")
    flip = clean_db.connect()
    flip.begin()
    flip.execute(sa.text("UPDATE chips SET status = 'degraded' WHERE id = :id"), {"id": chip})
    try:
        # When a router inserts onto it meanwhile (it still reads the chip as active) and commits
        with clean_db.begin() as conn:
            conn.execute(sa.text("SET LOCAL lock_timeout = '1s'"))
            insert_row(conn, chip, "during")
        flip.commit()
    finally:
        flip.close()
    # Then the chip's own note covers the row
    assert noted(clean_db) == [chip]
    # And a router writing after the change notes it itself
    other = make_chip(clean_db, "active")
    run(clean_db, "UPDATE chips SET status = 'cancelled' WHERE id = :id", id=other)
    tidy_after_plan(clean_db)
    assert other not in notes(clean_db)
    with clean_db.begin() as conn:
        insert_row(conn, other, "after")
    assert noted(clean_db) == sorted([chip, other])


def test_settling_skips_a_chip_another_transaction_holds_and_drops_notes_of_gone_chips(
    clean_db: sa.Engine,
) -> None:
    # Given notes on a degraded chip without rows, a cancelled chip with open rows, and a chip
    # that no longer exists
    empty, busy = make_chip(clean_db, "active"), make_chip(clean_db, "cancelled")
    gone = make_chip(clean_db, "active")
    add_conversations(clean_db, busy, 1)
    run(clean_db, "UPDATE chips SET status = 'degraded' WHERE id IN (:a, :b)", a=empty, b=gone)
    run(clean_db, "DELETE FROM chips WHERE id = :id", id=gone)
    assert notes(clean_db) == sorted([empty, busy, gone])
    holder = clean_db.connect()
    holder.begin()
    holder.execute(sa.text("SELECT 1 FROM chips WHERE id = :id FOR KEY SHARE"), {"id": empty})
    try:
        # When a cycle tidies while another transaction holds the empty chip
        first = tidy_after_plan(clean_db)
    finally:
        holder.rollback()
        holder.close()
    # Then only the vanished chip's note went; the next cycle settles the empty chip's
    assert first["notes_settled"] == 1
    assert notes(clean_db) == sorted([empty, busy])
    assert tidy_after_plan(clean_db)["notes_settled"] == 1
    assert notes(clean_db) == [busy]


def test_rows_the_triggers_never_saw_are_found_by_the_backstop_and_noted(
    clean_db: sa.Engine,
) -> None:
    # Given open rows put on a degraded chip with the triggers bypassed (a restore, replication)
    chip = make_chip(clean_db, "degraded")
    make_chip(clean_db, "active")
    with clean_db.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        insert_row(conn, chip, "restored")
    assert notes(clean_db) == []
    assert ("stranded_unnoted", chip) in unnoted(clean_db)
    # When the cycle plans (a small pool: the backstop slice is the whole chip-id space)
    the_plan, _, _, sweep = cycle.read_plan(clean_db, trust=False)
    cycle.tidy(clean_db, sweep)
    # Then it migrates them, and the chip is noted for the cycles after
    assert the_plan.migrate == (chip,) and sweep.unnoted == (chip,)
    assert noted(clean_db) == [chip]
    assert unnoted(clean_db) == []


def test_the_backstop_slices_cover_every_chip_id_once() -> None:
    slices = 7
    ranges = [repo.chip_range(i, slices) for i in range(slices)]
    assert ranges[0][0] == "00000000-0000-0000-0000-000000000000" and ranges[-1][1] is None
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(slices - 1))
    assert cycle.backstop_slices(100) == 1
    assert cycle.backstop_slices(100_000) == 100_000 // cycle.BACKSTOP_ACTIVE_PER_SLICE


def active_chips(engine: sa.Engine, n: int) -> None:
    """n healthy active chips in one statement (what sets the number of backstop slices)."""
    run(
        engine,
        "INSERT INTO chips (telefone, ddd, status, trust_score, fase_warmup, ready_at,"
        " promoted_to_active_at) SELECT '+5511' || lpad(g::text, 9, '0'), 11, 'active', 90,"
        " 'operacao', now(), now() FROM generate_series(1, :n) AS g",
        n=n,
    )


def inside(index: int, slices: int) -> str:
    """A chip id just above the start of slice `index` of `slices`."""
    low = uuid.UUID(repo.chip_range(index, slices)[0])
    return str(uuid.UUID(int=low.int + 1))


def stranded_unseen(engine: sa.Engine, chip_id: str) -> str:
    """A degraded chip with an open row written with the triggers bypassed (no note)."""
    make_chip(engine, "degraded", id=chip_id)
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        insert_row(conn, chip_id, f"restored-{chip_id}")
    return chip_id


def test_consecutive_cycles_read_every_backstop_slice_once_in_rotation(
    clean_db: sa.Engine,
) -> None:
    # Given a pool cut into 8 backstop slices, and in each slice one stranded chip nobody noted
    slices = 8
    active_chips(clean_db, slices * cycle.BACKSTOP_ACTIVE_PER_SLICE)
    hidden = [stranded_unseen(clean_db, inside(i, slices)) for i in range(slices)]
    # When 8 cycles plan and tidy, one after the other
    found = []
    for _ in range(slices):
        the_plan, _, _, sweep = cycle.read_plan(clean_db, trust=False)
        assert set(sweep.unnoted) <= set(the_plan.migrate)
        found.append(sweep.unnoted)
        cycle.tidy(clean_db, sweep)
    # Then each read the slice after the previous one's (wherever the rotation stood): every
    # stranded chip was found exactly once, in slice order, and none is left unnoted
    assert len(found[0]) == 1
    start = hidden.index(found[0][0])
    assert found == [(hidden[(start + k) % slices],) for k in range(slices)]
    assert unnoted(clean_db) == []


def test_two_cycles_that_read_the_same_slice_move_the_rotation_on_once(
    clean_db: sa.Engine,
) -> None:
    # Given two cycles that planned from the same position (a lost cycle guard), and a plan
    # that only looks (`chip-orchestrator plan`)
    with clean_db.connect() as conn:
        start = repo.backstop_position(conn)
    sweeps = [cycle.read_plan(clean_db, trust=False)[3] for _ in range(2)]
    cycle.plan(clean_db)
    assert [s.backstop_at for s in sweeps] == [start, start]
    # When both tidy
    for sweep in sweeps:
        cycle.tidy(clean_db, sweep)
    # Then the next cycle reads the next slice, not the one after it
    with clean_db.begin() as conn:
        assert repo.backstop_position(conn) == start + 1
        assert repo.advance_backstop(conn, start) is False  # a stale position moves nothing
        assert repo.advance_backstop(conn, start + 1) is True


def test_a_thread_never_waits_on_settling(clean_db: sa.Engine) -> None:
    # Given a noted chip whose note a cycle is settling, its transaction held open
    chip = make_chip(clean_db, "active")
    run(clean_db, "UPDATE chips SET status = 'degraded' WHERE id = :id", id=chip)
    *_, sweep = cycle.read_plan(clean_db, trust=False)
    settling = clean_db.connect()
    settling.begin()
    assert repo.settle_stranded_notes(settling, sweep.settle) == 1
    landed: dict[str, object] = {}

    def router() -> None:
        with clean_db.begin() as conn:
            insert_row(conn, chip, "racing")
            landed["ok"] = True

    thread = threading.Thread(target=router)
    try:
        # When a router inserts onto the chip meanwhile (its foreign key waits for the settle)
        thread.start()
        wait_until(lambda: waiting_backends(clean_db) == 1)
        settling.commit()
    finally:
        settling.close()
    thread.join(20)
    # Then, the note gone, the router's row still got its own note
    assert landed == {"ok": True}
    assert noted(clean_db) == [chip]
