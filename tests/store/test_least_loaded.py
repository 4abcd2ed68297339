"""least_loaded_healthy_active: where conversations go when no replacement can take them.

It must pick a healthy active chip (connected, trust at or above the replacement threshold, not
the chip being emptied, not one another transaction holds), the least loaded, ties by trust then
id, and its cost must not grow with the number of active chips.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from orchestrator.store import repository as repo
from orchestrator.store.repository import candidates
from tests.factories import add_conversations, make_chip

pytestmark = pytest.mark.db

#: Chips whose conversations one pick may count, however many active chips there are.
PROBES_AT_MOST = 100


def healthy_actives(engine: sa.Engine, n: int, *, conversations: int = 1) -> list[str]:
    """n healthy active chips with distinct trust (the first most trusted), each holding
    `conversations` open rows; returns their ids, most trusted first."""
    with engine.begin() as conn:
        ids = list(
            conn.execute(
                sa.text(
                    "INSERT INTO chips (telefone, ddd, status, trust_score, ready_at,"
                    " promoted_to_active_at)"
                    " SELECT '+5531' || lpad(g::text, 9, '0'), 31, 'active', 99 - g * 0.01,"
                    " now(), now() FROM generate_series(1, :n) AS g"
                    " RETURNING id, trust_score"
                ),
                {"n": n},
            ).all()
        )
        conn.execute(
            sa.text(
                "INSERT INTO conversation_chips (conversation_id, chip_id)"
                " SELECT c::text || '-' || k, c FROM unnest(CAST(:ids AS uuid[])) AS c,"
                " generate_series(1, :k) AS k"
            ),
            {"ids": [i for i, _ in ids], "k": conversations},
        )
    return [str(i) for i, _ in sorted(ids, key=lambda r: -r[1])]


def pick(engine: sa.Engine, exclude: str) -> str | None:
    with engine.begin() as conn:
        chip = repo.least_loaded_healthy_active(conn, repo.load_config(conn), exclude=exclude)
    return None if chip is None else str(chip["id"])


def _nodes(plan: dict) -> Iterator[dict]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def conversation_probes(engine: sa.Engine, exclude: str) -> int:
    """How many times the pick's executed plan scanned conversation_chips (EXPLAIN ANALYZE)."""
    sent: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        sent.append((statement, parameters))

    with engine.connect() as conn:
        config = repo.load_config(conn)
        sa.event.listen(conn, "before_cursor_execute", record)
        repo.least_loaded_healthy_active(conn, config, exclude=exclude)
        sa.event.remove(conn, "before_cursor_execute", record)
        [(statement, parameters)] = sent
        [plan] = conn.exec_driver_sql(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters
        ).one()
        conn.rollback()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return sum(
        node["Actual Loops"]
        for node in _nodes(plan[0]["Plan"])
        if node.get("Relation Name") == "conversation_chips"
        or node.get("Index Name") == "idx_conversation_chips_chip_active"
    )


def test_a_pick_counts_the_load_of_a_bounded_sample_not_of_every_active_chip(
    clean_db: sa.Engine,
) -> None:
    # Given three times as many healthy active chips as one pick may count, each holding a
    # conversation, and a banned chip to empty
    healthy_actives(clean_db, 3 * PROBES_AT_MOST)
    banned = make_chip(clean_db, "banned")
    with clean_db.begin() as conn:
        conn.execute(sa.text("ANALYZE chips; ANALYZE conversation_chips"))
    # When the least loaded healthy active chip is picked
    probes = conversation_probes(clean_db, banned)
    # Then the conversations of at most the sample were counted, once each
    assert 0 < probes <= PROBES_AT_MOST
    assert candidates.LEAST_LOADED_SAMPLE <= PROBES_AT_MOST


def test_the_least_loaded_healthy_chip_wins_ties_by_trust_then_id(clean_db: sa.Engine) -> None:
    # Given healthy active chips with 3, 1, 1 and 1 conversations (two of the 1s tied on trust),
    # and chips that must never take conversations, each holding none
    busy = make_chip(clean_db, "active", trust=99)
    add_conversations(clean_db, busy, 3)
    low, tied_a, tied_b = (make_chip(clean_db, "active", trust=t) for t in (70, 80, 80))
    for chip in (low, tied_a, tied_b):
        add_conversations(clean_db, chip, 1)
    emptied = make_chip(clean_db, "active", trust=95)
    make_chip(clean_db, "active", trust=95, evolution_connected=False)
    make_chip(clean_db, "active", trust=59)
    for status in ("ready", "degraded", "warming"):
        make_chip(clean_db, status, trust=99)
    # When the chip being emptied asks, twice
    first, second = pick(clean_db, emptied), pick(clean_db, emptied)
    # Then the least loaded wins; among equals the more trusted, then the lower id, every time
    assert first == second == min(tied_a, tied_b)


def test_a_chip_another_transaction_holds_is_skipped_not_waited_for(clean_db: sa.Engine) -> None:
    # Given two healthy active chips, the less loaded one locked by a swap still running
    idle, busy = make_chip(clean_db, "active"), make_chip(clean_db, "active")
    add_conversations(clean_db, busy, 2)
    banned = make_chip(clean_db, "banned")
    holder = clean_db.connect()
    holder.begin()
    holder.execute(sa.text("SELECT 1 FROM chips WHERE id = :id FOR UPDATE"), {"id": idle})
    try:
        # When the pick runs, then again once the swap ends
        while_held = pick(clean_db, banned)
        holder.rollback()
        after = pick(clean_db, banned)
    finally:
        holder.close()
    # Then it took the other chip at once, and the less loaded one afterwards
    assert (while_held, after) == (busy, idle)


def test_above_the_sample_the_pick_is_the_least_loaded_of_the_most_trusted(
    clean_db: sa.Engine,
) -> None:
    # Given one more healthy active chip than the sample, all holding 2 conversations, except
    # the second most trusted (1) and the least trusted, outside the sample (none)
    chips = healthy_actives(clean_db, candidates.LEAST_LOADED_SAMPLE + 1, conversations=2)
    with clean_db.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM conversation_chips WHERE chip_id = ANY(CAST(:ids AS uuid[]))"),
            {"ids": [chips[-1]]},
        )
        conn.execute(
            sa.text(
                "UPDATE conversation_chips SET active = false WHERE id IN"
                " (SELECT id FROM conversation_chips WHERE chip_id = :c LIMIT 1)"
            ),
            {"c": chips[1]},
        )
    banned = make_chip(clean_db, "banned")
    # When the pick runs
    # Then the conversations go to the least loaded of the sample, a trusted chip holding few
    assert pick(clean_db, banned) == chips[1]
